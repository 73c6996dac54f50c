"""Bidirectional Monte Carlo (BDMC): data simulated from the model, and a lower and an
upper bound of ``log p(x)`` on it.

Run backwards from an exact posterior sample, with the forward run's step sizes in
reverse order (so that its transitions are fixed before it starts), the AIS chain of
:mod:`pyro_vae.ais` estimates ``1 / p(x)`` without bias, and minus its ``log`` mean
weight is a stochastic *upper* bound. An exact posterior sample is available for data
simulated from the model: draw ``z ~ P(z)``, then ``x ~ P(x|z)``. The two bounds
sandwich ``log p(x)`` (Grosse et al. 2015); their gap says how many steps the model
needs.

:mod:`pyro_vae.ais` re-exports every public name here.

References:

- R. B. Grosse, Z. Ghahramani, R. P. Adams. Sandwiching the marginal likelihood using
  bidirectional Monte Carlo. arXiv:1511.02543, 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pyro.poutine as poutine
import torch

from pyro_vae import distributed
from pyro_vae.ais_settings import ADAPT_RATE, DEFAULTS, STEP_SIZE, Settings, schedule
from pyro_vae.annealing import (
    AISResult,
    Annealer,
    ais_result,
    check_per_point,
    draw_seeds,
    final_step_size,
    mix_seed,
    point_args,
)
from pyro_vae.weights import inspect_layout, sample_sites


class BDMCResult(NamedTuple):
    """Per-point bidirectional Monte Carlo bounds on simulated data, in nats.

    :ivar lower: ``(N,)`` forward AIS from the initial distribution: a stochastic lower
        bound of ``log p(x)``.
    :ivar upper: ``(N,)`` reverse AIS from the exact posterior sample: a stochastic upper
        bound of ``log p(x)``.
    :ivar forward: the forward chains' :class:`~pyro_vae.ais.AISResult` (``log_px`` is
        ``lower``).
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

    Other arguments as in :func:`~pyro_vae.ais.annealed_importance_sampling`.

    :returns: :class:`BDMCResult`.
    :raises ValueError: as :func:`~pyro_vae.ais.annealed_importance_sampling`, or a model
        that cannot simulate its data.
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
    return run_bdmc(model, guide, args, seeds, site, settings, None, **kwargs)


def run_bdmc(model, guide, args, seeds, site, settings, on_step, **kwargs) -> BDMCResult:
    """:func:`bdmc` with its settings as a dict (all of :data:`~pyro_vae.ais.DEFAULTS`
    given) and ``on_step`` called after every step of either direction."""
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
    forward = ais_result(checked, log_w, acceptance, final_step_size(checked, steps))
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


__all__ = ["BDMCResult", "bdmc", "simulate", "simulated_data"]
