"""Annealed importance sampling (AIS) of ``log P(x)`` per data point, and bidirectional
Monte Carlo (BDMC) bounds on data simulated from the model.

Importance sampling with the guide as proposal (:mod:`pyro_vae.evaluate`) is biased
low by an amount its output cannot show when the guide is far from the posterior.
AIS (Neal 2001) moves each sample from an initial distribution ``pi_0(z)`` (the guide
``Q(z|x)`` by default, or the prior ``P(z)``) towards the posterior through a sequence
of distributions

    ``f_t(z) = pi_0(z)^(1 - beta_t) p(x, z)^beta_t``,  ``0 = beta_0 < ... < beta_T = 1``,

with a Hamiltonian Monte Carlo transition that leaves ``f_t`` invariant after each
step, and weights it by ``log w = sum_t (beta_t - beta_{t-1}) (log p(x, z_{t-1}) -
log pi_0(z_{t-1}))``. With transitions fixed in advance ``E[w] = p(x)`` exactly, so
``log`` of the mean weight over C chains is a stochastic lower bound of ``log p(x)``
whose bias shrinks as T grows, however poor ``pi_0`` is (Wu et al. 2017).

Run backwards from an exact posterior sample, with the forward run's step sizes in
reverse order (so that its transitions are fixed before it starts), the chain estimates
``1 / p(x)`` without bias, and minus its ``log`` mean weight is a stochastic *upper*
bound. An exact posterior sample is available for data simulated from the model: draw
``z ~ P(z)``, then ``x ~ P(x|z)``. The two bounds sandwich ``log p(x)`` (Grosse et al.
2015); their gap says how many steps the model needs.

Everything comes from the model's and the initial distribution's Pyro code: the joint
``log p(x, z)`` from a trace of the model with the latent sites given, ``log pi_0``
from a trace of the guide (or from the prior sites of that same model trace). Latent
sites with a constrained support move in unconstrained space
(:func:`torch.distributions.biject_to`, with the Jacobian in the HMC target). Data
points are indexed by ``pyro.plate("data", N)`` as for the importance-sampling
evaluator; chains run in an outer particle plate, so points and chains are batched.

Each HMC transition takes ``L`` leapfrog steps with Pyro's integrator
(:func:`pyro.ops.integrator.velocity_verlet`), accepts or rejects per chain, and adapts
each point's step size towards a mean acceptance rate of 0.65, within bounds: after
every transition the log step size moves in proportion to the chains' mean acceptance
minus the target. The step sizes follow the chains' past, so the transitions are not
fixed in advance as the textbook argument assumes; the tests hold the estimates to exact
values where they exist. Every point draws from random streams of its own, so the
results do not depend on how the points are batched or on the number of processes.

Cost: about ``C * T * (L + 1)`` passes of the model (and of the guide, where it has more
than one latent site) per point, each with its gradient.

References:

- R. M. Neal. Annealed importance sampling. Statistics and Computing 11, 2001.
- R. B. Grosse, Z. Ghahramani, R. P. Adams. Sandwiching the marginal likelihood using
  bidirectional Monte Carlo. arXiv:1511.02543, 2015.
- Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the Quantitative Analysis of
  Decoder-Based Generative Models. ICLR 2017.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pyro.poutine as poutine
import torch

from pyro_vae import distributed
from pyro_vae.annealing import (
    ADAPT_RATE,
    INITS,
    SCHEDULES,
    SIGMOID_DELTA,
    STEP_SIZE,
    STEP_SIZE_BOUNDS,
    TARGET_ACCEPT,
    Annealer,
    Settings,
    check_count,
    check_per_point,
    draw_seeds,
    mix_seed,
    point_args,
)
from pyro_vae.weights import inspect_layout, sample_sites

#: the settings of :func:`ais_dataset` and :func:`bdmc_dataset` that are not given
DEFAULTS = {
    "num_steps": 500,
    "num_chains": 8,
    "leapfrog_steps": 10,
    "init": "guide",
    "schedule_kind": "sigmoid",
    "step_size": STEP_SIZE,
    "adapt_rate": ADAPT_RATE,
}
#: chains x points per batched pass when ``points_per_batch`` is not given
DEFAULT_PAIRS_PER_BATCH = 2**11


class AISResult(NamedTuple):
    """Per-point results of :func:`annealed_importance_sampling`, in nats.

    :ivar log_px: ``(N,)`` ``log`` of the mean AIS weight over chains: a stochastic lower
        bound of ``log P(x)`` (the weights themselves are unbiased).
    :ivar log_weights: ``(C, N)`` every chain's log weight.
    :ivar acceptance: ``(N,)`` mean HMC acceptance probability over chains and
        transitions.
    :ivar step_size: ``(N,)`` each point's step size after the last transition.
    :ivar num_steps: T, intermediate distributions.
    :ivar num_chains: C, chains per point.
    :ivar leapfrog_steps: L, leapfrog steps per HMC transition.
    :ivar init: ``"guide"`` or ``"prior"``.
    :ivar schedule: ``"sigmoid"`` or ``"linear"``.
    """

    log_px: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    num_steps: int
    num_chains: int
    leapfrog_steps: int
    init: str
    schedule: str


class BDMCResult(NamedTuple):
    """Per-point bidirectional Monte Carlo bounds on simulated data, in nats.

    :ivar lower: ``(N,)`` forward AIS from the initial distribution: a stochastic lower
        bound of ``log p(x)``.
    :ivar upper: ``(N,)`` reverse AIS from the exact posterior sample: a stochastic upper
        bound of ``log p(x)``.
    :ivar forward: the forward chains' :class:`AISResult` (``log_px`` is ``lower``).
    :ivar reverse_acceptance: ``(N,)`` mean acceptance of the reverse chains.
    :ivar data: the simulated data, the model's arguments (on the CPU).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    forward: AISResult
    reverse_acceptance: torch.Tensor
    data: tuple[torch.Tensor, ...]

    @property
    def width(self) -> torch.Tensor:
        """``(N,)`` ``upper - lower``: how far either may be from ``log p(x)``."""
        return self.upper - self.lower


def schedule(num_steps: int, kind: str = "sigmoid") -> torch.Tensor:
    """``beta_0 = 0 < beta_1 < ... < beta_T = 1``, ``(T + 1,)`` double.

    ``"sigmoid"``: ``s_t = sigmoid(delta (2 t / T - 1))`` rescaled to run from 0 to 1
    (Wu et al., appendix; ``delta = 4``): small steps at both ends, where the target
    changes fastest. ``"linear"``: ``t / T``.

    :param int num_steps: T >= 1.
    :param str kind: one of :data:`SCHEDULES`.
    """
    check_count("num_steps", num_steps)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    t = torch.arange(num_steps + 1, dtype=torch.double) / num_steps
    if kind == "linear":
        return t
    s = torch.sigmoid(SIGMOID_DELTA * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


def annealed_importance_sampling(
    model: Callable,
    guide: Callable | None,
    *args: Any,
    num_steps: int = DEFAULTS["num_steps"],
    num_chains: int = DEFAULTS["num_chains"],
    leapfrog_steps: int = DEFAULTS["leapfrog_steps"],
    init: str = DEFAULTS["init"],
    schedule_kind: str = DEFAULTS["schedule_kind"],
    step_size: float = STEP_SIZE,
    adapt_rate: float = ADAPT_RATE,
    seeds: Sequence[int] | None = None,
    **kwargs: Any,
) -> AISResult:
    """AIS estimates of ``log P(x)`` for a batch of data points, every point on its own
    random stream.

    :param model: Pyro model; data points indexed by ``pyro.plate("data", N)``.
    :param guide: Pyro guide with the model's signature; used for ``init="guide"``.
    :param args: the model's positional arguments: tensors whose first dimension indexes
        the N data points (each point's initial draw sees its own rows).
    :param int num_steps: T, intermediate distributions (HMC transitions: T - 1).
    :param int num_chains: C, independent chains per point.
    :param int leapfrog_steps: L, leapfrog steps per transition.
    :param str init: ``"guide"`` (``pi_0 = Q(z|x)``) or ``"prior"`` (``pi_0 = P(z)``).
    :param str schedule_kind: one of :data:`SCHEDULES`.
    :param float step_size: the first step size of every point, in ``(0, 1)``.
    :param float adapt_rate: after each transition, each point's log step size moves by
        ``adapt_rate * (a - TARGET_ACCEPT)``, ``a`` its chains' mean acceptance
        probability; 0 keeps the step size fixed. Wu et al. multiply or divide by 1.02
        instead, which settles where the *median* acceptance is the target and takes
        about 170 transitions to climb from 0.01 to 0.3; the proportional rule settles
        on the mean and climbs in about 20.
    :param seeds: one integer per point, the base of its random stream; by default drawn
        from torch's global generator (so ``pyro.set_rng_seed`` makes a call repeatable).
    :param kwargs: keyword arguments of model and guide, shared by every point.
    :returns: :class:`AISResult`.
    :raises ValueError: bad settings, a discrete or masked latent site, a guide whose
        support differs from the model's, or what the evaluator refuses (no ``"data"``
        plate, a guide that lacks a latent site).
    """
    settings = Settings.make(
        num_steps, num_chains, leapfrog_steps, init, schedule_kind, step_size, adapt_rate
    )
    annealer = Annealer(model, guide, args, kwargs, settings)
    seeds = annealer.seeds(seeds)
    log_w, acceptance, steps = annealer.run(schedule(num_steps, schedule_kind), seeds)
    return _result(settings, log_w, acceptance, _final(settings, steps))


def bdmc(
    model: Callable,
    guide: Callable | None,
    *args: Any,
    site: str | None = None,
    num_steps: int = DEFAULTS["num_steps"],
    num_chains: int = DEFAULTS["num_chains"],
    leapfrog_steps: int = DEFAULTS["leapfrog_steps"],
    init: str = DEFAULTS["init"],
    schedule_kind: str = DEFAULTS["schedule_kind"],
    step_size: float = STEP_SIZE,
    adapt_rate: float = ADAPT_RATE,
    seeds: Sequence[int] | None = None,
    **kwargs: Any,
) -> BDMCResult:
    """Bidirectional Monte Carlo on data simulated from the model: AIS forward for a lower
    bound of ``log p(x)``, and backward from the latents that generated ``x`` for an
    upper bound.

    Each point's latents are drawn from the prior and its observation ``site`` from
    ``P(x|z)`` (the model run with its observations removed, :func:`pyro.poutine.uncondition`);
    the last positional argument, the observed data, is replaced by the simulation. The
    other arguments (a conditional model's inputs) stay as given. The reverse chains all
    start from the one exact posterior sample of their point, and take the forward
    run's step sizes in reverse order.

    :param str site: the observed site whose values the last positional argument holds;
        by default the model's only observed site.

    Other arguments as in :func:`annealed_importance_sampling`.

    :returns: :class:`BDMCResult`.
    :raises ValueError: as :func:`annealed_importance_sampling`, or a model that cannot
        simulate its data.
    """
    settings = dict(
        num_steps=num_steps,
        num_chains=num_chains,
        leapfrog_steps=leapfrog_steps,
        init=init,
        schedule_kind=schedule_kind,
        step_size=step_size,
        adapt_rate=adapt_rate,
    )
    return _run_bdmc(model, guide, args, seeds, site, settings, None, **kwargs)


def _run_bdmc(model, guide, args, seeds, site, settings, on_step, **kwargs) -> BDMCResult:
    checked = Settings.make(**settings)
    if seeds is None:
        seeds = draw_seeds(check_per_point(args))
    data, latents = simulated_data(model, args, [mix_seed(s, 1) for s in seeds], site, **kwargs)
    annealer = Annealer(model, guide, data, kwargs, checked)
    betas = schedule(checked.num_steps, checked.schedule_kind)
    log_w, acceptance, steps = annealer.run(betas, seeds, on_step=on_step)
    reverse_seeds = [mix_seed(s, 2) for s in seeds]
    reverse_w, reverse_acceptance, _ = annealer.run(
        betas.flip(0), reverse_seeds, start=latents, step_sizes=steps.flip(0), on_step=on_step
    )
    forward = _result(checked, log_w, acceptance, _final(checked, steps))
    upper = -(torch.logsumexp(reverse_w, 0) - math.log(checked.num_chains))
    return BDMCResult(forward.log_px, upper, forward, reverse_acceptance, data)


def simulated_data(model: Callable, args: tuple, seeds, site: str | None = None, **kwargs):
    """The model's arguments with the observed data replaced by a simulation, and the
    latents that made it: ``(args, {site: latents})``.

    :param args: the model's positional arguments; the last holds the observations of
        ``site`` (by default the model's only observed site), one row per point.
    :param seeds: one integer per point (see :func:`simulate`).
    :raises ValueError: a model that cannot simulate its data, or whose simulated
        ``site`` does not fit the last argument.
    """
    check_per_point(args)
    observed, latents = simulate(model, *args, seeds=seeds, **kwargs)
    if site is None:
        if len(observed) != 1:
            raise ValueError(
                f"the model observes {len(observed)} sites ({', '.join(observed)}); "
                "name the one that the last argument holds with site="
            )
        (site,) = observed
    if site not in observed:
        raise ValueError(f"the model has no observed site {site!r}; it observes {list(observed)}")
    target, values = args[-1], observed[site]
    if values.numel() != target.numel():
        raise ValueError(
            f"the model's simulated {site!r} has {values.numel()} values where the data hold "
            f"{target.numel()}; BDMC needs the site to observe the last argument as it is"
        )
    return (*args[:-1], values.to(target.dtype).reshape(target.shape)), latents


def check(model: Callable, guide: Callable | None, *args: Any, init: str = "guide", **kwargs):
    """Raise the :class:`ValueError` that AIS would raise for these arguments, before any
    work: no ``"data"`` plate, no latent site, a discrete latent site, a guide that lacks
    a latent site, or an unknown ``init``.

    :param args: the model's arguments, one data point is enough.
    """
    settings = Settings.make(**{**DEFAULTS, "init": init})
    Annealer(model, guide, args, kwargs, settings)


def _final(settings: Settings, steps: torch.Tensor) -> torch.Tensor:
    """Each point's last step size from a ``(T - 1, N)`` trajectory (the first where
    there was no transition)."""
    return steps[-1] if len(steps) else torch.full(steps.shape[1:], settings.step_size)


def _result(settings: Settings, log_w, acceptance, final_step) -> AISResult:
    log_px = torch.logsumexp(log_w, 0) - math.log(settings.num_chains)
    return AISResult(
        log_px,
        log_w,
        acceptance,
        final_step,
        settings.num_steps,
        settings.num_chains,
        settings.leapfrog_steps,
        settings.init,
        settings.schedule_kind,
    )


@torch.no_grad()
def simulate(
    model: Callable, *args: Any, seeds: Sequence[int], **kwargs: Any
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Draw every point's latents from the prior and its observations from the model.

    :param seeds: one integer per data point; point ``i`` is drawn from a stream seeded
        with ``seeds[i]``, so it does not depend on the others.
    :returns: ``(observed, latents)``: ``{site: values}`` for the observed and for the
        latent sites, the data points along the first dimension (each site's values as
        the model draws them for one point, stacked).
    :raises ValueError: a site whose distribution cannot draw samples.
    """
    check_per_point(args)
    layout = inspect_layout(model, None, args, kwargs)
    parts: dict[str, list[torch.Tensor]] = {}
    observed_names: list[str] = []
    positions: dict[str, int] = {}
    devices = distributed.rng_devices(*(a for a in args if torch.is_tensor(a)))
    with torch.random.fork_rng(devices=devices):
        for i, seed in enumerate(seeds):
            torch.manual_seed(seed)
            try:
                trace = poutine.trace(poutine.uncondition(model)).get_trace(
                    *point_args(args, i), **kwargs
                )
            except NotImplementedError as e:
                raise ValueError(f"the model cannot simulate its data: {e}") from None
            for s in sample_sites(trace):
                if s["infer"].get("was_observed") and s["name"] not in observed_names:
                    observed_names.append(s["name"])
                positions[s["name"]] = s["value"].dim() - s["fn"].event_dim + layout.data_dim
                parts.setdefault(s["name"], []).append(s["value"])
    # one point's values have a data dim of size 1: the points go first
    values = {
        name: torch.cat([p.movedim(positions[name], 0) for p in v]) for name, v in parts.items()
    }
    observed = {n: v for n, v in values.items() if n in observed_names}
    latents = {n: v for n, v in values.items() if n not in observed_names}
    return observed, latents


# --- whole splits: per-point streams, batches, processes -----------------------------------


def ais_dataset(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    seed: int | None = None,
    points_per_batch: int | None = None,
    progress: bool = False,
    **settings: Any,
) -> AISResult:
    """:func:`annealed_importance_sampling` for every data point of a split.

    Point ``i`` draws from streams seeded with
    :func:`~pyro_vae.distributed.stream_seed` ``(seed, "ais", i)``, so its results do not
    depend on the other points, on the batches (up to floating-point rounding) or on the
    number of processes. Inside a process group every rank must call this with the same
    arguments: each runs its contiguous share of the points, and every rank returns all
    the results in the original order. Results move to the CPU.

    :param data: a tensor or tuple of tensors (the model's positional arguments) whose
        first dimension indexes the data points.
    :param int seed: the base of the per-point streams; ``None`` draws one from torch's
        global generator.
    :param int points_per_batch: points run together; by default
        ``DEFAULT_PAIRS_PER_BATCH // num_chains`` (at least 1), so memory depends on
        neither T nor the data set's size.
    :param bool progress: a progress bar over steps (rank 0 only).
    :param settings: ``num_steps``, ``num_chains``, ``leapfrog_steps``, ``init``,
        ``schedule_kind``, ``step_size``, ``adapt_rate`` as in
        :func:`annealed_importance_sampling`.
    :returns: :class:`AISResult`.
    """
    parts, checked = _over_points(
        lambda args, seeds, step: _ais_batch(model, guide, args, seeds, settings, step),
        data,
        seed,
        "ais",
        points_per_batch,
        settings,
        progress,
        "log P(x) by AIS",
    )
    log_w, acceptance, final_step = (torch.cat(p, dim=-1) for p in zip(*parts, strict=True))
    return _result(checked, log_w, acceptance, final_step)


def bdmc_dataset(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    site: str | None = None,
    seed: int | None = None,
    points_per_batch: int | None = None,
    progress: bool = False,
    **settings: Any,
) -> BDMCResult:
    """:func:`bdmc` for every point of ``data``, one simulated point per real one: the
    real point supplies the model's other arguments (a conditional model's input) and
    the shape of its observation. Streams, batches and processes as in
    :func:`ais_dataset` (the streams are ``stream_seed(seed, "bdmc", i)``).

    :param str site: the observed site the last tensor of ``data`` holds.
    :returns: :class:`BDMCResult`.
    """
    parts, checked = _over_points(
        lambda args, seeds, step: _bdmc_batch(model, guide, args, seeds, site, settings, step),
        data,
        seed,
        "bdmc",
        points_per_batch,
        settings,
        progress,
        "BDMC bounds",
        passes=2,
    )
    lower, upper, log_w, acceptance, steps, reverse_acceptance, simulated = zip(*parts, strict=True)
    forward = _result(checked, torch.cat(log_w, -1), torch.cat(acceptance), torch.cat(steps))
    simulated = tuple(torch.cat(t) for t in zip(*simulated, strict=True))
    return BDMCResult(
        torch.cat(lower), torch.cat(upper), forward, torch.cat(reverse_acceptance), simulated
    )


def _ais_batch(model, guide, args, seeds, settings, on_step):
    checked = Settings.make(**_with_defaults(settings))
    annealer = Annealer(model, guide, args, {}, checked)
    betas = schedule(checked.num_steps, checked.schedule_kind)
    log_w, acceptance, steps = annealer.run(betas, seeds, on_step=on_step)
    return log_w, acceptance, _final(checked, steps)


def _bdmc_batch(model, guide, args, seeds, site, settings, on_step):
    result = _run_bdmc(model, guide, args, seeds, site, _with_defaults(settings), on_step)
    f = result.forward
    return (
        result.lower,
        result.upper,
        f.log_weights,
        f.acceptance,
        f.step_size,
        result.reverse_acceptance,
        tuple(t.cpu() for t in result.data),
    )


def _with_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown AIS settings: {', '.join(unknown)}")
    return {**DEFAULTS, **settings}


def _over_points(
    run_batch, data, seed, purpose, points_per_batch, settings, progress, what, passes=1
):
    """Run ``run_batch(args, seeds, on_step)`` over this rank's share of the points in
    batches; gather every rank's results (moved to the CPU), in order."""
    from tqdm.auto import tqdm

    checked = Settings.make(**_with_defaults(settings))
    data = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    n = data[0].shape[0]
    if n == 0:
        raise ValueError("no data points to evaluate (the first dimension of data is 0)")
    if points_per_batch is None:
        points_per_batch = max(1, DEFAULT_PAIRS_PER_BATCH // checked.num_chains)
    check_count("points_per_batch", points_per_batch)
    if seed is None:
        seed = distributed.broadcast(int(torch.randint(0, 2**62, ()).item()))
    mine = distributed.shard(n)
    show = progress and distributed.is_main()
    total = len(mine) * checked.num_steps * passes
    label = f"{what}, T={checked.num_steps}, C={checked.num_chains}"
    parts = []
    with tqdm(total=total, desc=label, unit="pt-step", disable=not show) as bar:
        for start in range(mine.start, mine.stop, points_per_batch):
            index = range(start, min(start + points_per_batch, mine.stop))
            args = tuple(t[index.start : index.stop] for t in data)
            seeds = [distributed.stream_seed(seed, purpose, i) for i in index]
            out = run_batch(args, seeds, functools.partial(bar.update, len(index)))
            parts.append(_to_cpu(out))
    gathered = [p for rank in distributed.all_gather(parts) for p in rank]
    return gathered, checked


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, tuple):
        return tuple(_to_cpu(o) for o in obj)
    return obj


__all__ = [
    "ADAPT_RATE",
    "DEFAULTS",
    "DEFAULT_PAIRS_PER_BATCH",
    "INITS",
    "SCHEDULES",
    "SIGMOID_DELTA",
    "STEP_SIZE",
    "STEP_SIZE_BOUNDS",
    "TARGET_ACCEPT",
    "AISResult",
    "BDMCResult",
    "ais_dataset",
    "annealed_importance_sampling",
    "bdmc",
    "bdmc_dataset",
    "check",
    "schedule",
    "simulate",
    "simulated_data",
]
