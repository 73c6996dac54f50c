"""The chains of annealed importance sampling: state, densities, HMC transitions and
the per-point results they give.

:mod:`pyro_vae.ais` is the interface; this module holds what runs one batch of points:
the latent sites as one unconstrained ``(chains, points, D)`` tensor, the log densities
of the initial distribution and of the model from their Pyro code, and the annealing
loop with Pyro's leapfrog integrator, per-chain acceptance and per-point step sizes.
The settings it runs with are in :mod:`pyro_vae.ais_settings`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import sum_rightmost
from pyro.ops.integrator import potential_grad, velocity_verlet
from torch.distributions import biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from pyro_vae import distributed
from pyro_vae.ais_settings import STEP_SIZE_BOUNDS, TARGET_ACCEPT, Settings
from pyro_vae.weights import (
    PARTICLE_PLATE,
    Layout,
    inspect_layout,
    per_point_sum,
    sample_sites,
    site_log_prob,
)


class AISResult(NamedTuple):
    """Per-point results of :func:`~pyro_vae.ais.annealed_importance_sampling`, in nats.

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


def final_step_size(settings: Settings, steps: torch.Tensor) -> torch.Tensor:
    """Each point's last step size from a ``(T - 1, N)`` trajectory (the first where
    there was no transition)."""
    return steps[-1] if len(steps) else torch.full(steps.shape[1:], settings.step_size)


def ais_result(settings: Settings, log_w, acceptance, final_step) -> AISResult:
    """The :class:`AISResult` of ``(C, N)`` log weights, ``(N,)`` acceptance and final step
    sizes: ``log_px`` is the ``log`` of the mean weight over the chains."""
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


def draw_seeds(n: int) -> list[int]:
    return [int(s) for s in torch.randint(0, 2**62, (n,))]


def mix_seed(seed: int, salt: int) -> int:
    """A second, independent stream of a point: ``stream_seed`` of the point's seed."""
    return distributed.stream_seed(int(seed), "ais", salt)


def check_per_point(args: tuple) -> int:
    """The number of data points of positional arguments that are all per-point tensors
    (their first dimension indexes the points).

    :raises ValueError: an argument that is not a tensor, or first dimensions that differ.
    """
    if not args or not all(torch.is_tensor(a) and a.dim() for a in args):
        raise ValueError(
            "AIS takes the data as tensors whose first dimension indexes the data points; "
            "pass anything shared by all points as a keyword argument"
        )
    sizes = {a.shape[0] for a in args}
    if len(sizes) != 1:
        raise ValueError(f"the data tensors have different numbers of points: {sorted(sizes)}")
    return sizes.pop()


def point_args(args: tuple, i: int) -> tuple:
    """The positional arguments of data point ``i``: every tensor sliced to its row."""
    return tuple(a[i : i + 1] for a in args)


def is_identity(transform) -> bool:
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


class _Site(NamedTuple):
    name: str
    shape: tuple[int, ...]  # the unconstrained value's shape, the points moved to dim 1
    position: int  # the data plate's dim in the value
    transform: Any  # unconstrained -> support; None for the identity
    jacobian_event_dims: int  # dims of log|det J| beyond the site's batch shape


class Annealer:
    """The AIS chains of one batch of points: densities, HMC transitions, weights."""

    def __init__(self, model, guide, args, kwargs, settings: Settings) -> None:
        self.model, self.args, self.kwargs, self.settings = model, args, kwargs, settings
        self.guide = guide if settings.init == "guide" else None
        if settings.init == "guide" and guide is None:
            raise ValueError("init='guide' needs a guide")
        check_per_point(args)
        with poutine.block(), torch.no_grad():  # each alone: a replay may need valid latents
            trace = poutine.trace(model).get_trace(*args, **kwargs)
            guide_trace = (
                poutine.trace(self.guide).get_trace(*args, **kwargs) if self.guide else None
            )
        latent = [s for s in sample_sites(trace) if not s["is_observed"]]
        if not latent:
            raise ValueError("the model has no latent sites: its log-likelihood needs no AIS")
        for s in latent:
            _check_latent(s, guide_trace)
        self.layout: Layout = inspect_layout(model, self.guide, args, kwargs)
        if self.layout.num_points != args[0].shape[0]:
            raise ValueError(
                f"the 'data' plate has {self.layout.num_points} points but the data tensors "
                f"{args[0].shape[0]} rows; AIS needs the plate over their first dimension"
            )
        self.max_plate_nesting = self.layout.max_plate_nesting
        self.particle_dim = -(self.max_plate_nesting + 1)  # the chains' plate
        self.shape = (settings.num_chains, self.layout.num_points)
        self.latent = [s["name"] for s in latent]
        # the target's supports: the chains move in their unconstrained spaces
        self.supports = {s["name"]: _unmixed(s["fn"].support) for s in latent}
        self.guide_sites: dict[str, dict] | None = None  # the guide's one site, kept

    def seeds(self, seeds) -> list[int]:
        n = self.layout.num_points
        if seeds is None:
            return draw_seeds(n)
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"seeds must give one integer per data point ({n}), got {len(seeds)}")
        return seeds

    # -- the state: every latent site, unconstrained, as one (C, N, D) tensor -----------

    def _describe(self, values: dict[str, torch.Tensor], fns: dict[str, Any]) -> None:
        self.sites = []
        for name in self.latent:
            value, fn = values[name], fns[name]
            position = value.dim() - fn.event_dim + self.layout.data_dim
            transform = biject_to(self.supports[name])
            # a simplex of K entries has K - 1 unconstrained ones
            shape = list(transform.inv(value).movedim(position, 1).shape)
            shape[1] = self.layout.num_points
            self.sites.append(
                _Site(
                    name,
                    tuple(shape),
                    position,
                    None if is_identity(transform) else transform,
                    fn.event_dim - transform.codomain.event_dim,
                )
            )

    def flatten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Constrained site values (points along their data dim) -> ``(C, n, D)``."""
        parts = []
        for s in self.sites:
            v = values[s.name]
            if s.transform is not None:
                v = s.transform.inv(v)
            v = v.movedim(s.position, 1)
            parts.append(v.reshape(v.shape[0], v.shape[1], -1))
        return torch.cat(parts, dim=-1)

    def unflatten(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(C, N, D)`` -> ``({site: constrained value}, log|det J| per chain and point)``."""
        values, log_jacobian, start = {}, u.new_zeros(self.shape), 0
        for s in self.sites:
            size = math.prod(s.shape[2:])
            part = u[..., start : start + size].reshape(s.shape).movedim(1, s.position)
            start += size
            if s.transform is not None:
                constrained = s.transform(part)
                ladj = sum_rightmost(
                    s.transform.log_abs_det_jacobian(part, constrained), s.jacobian_event_dims
                )
                log_jacobian = log_jacobian + per_point_sum(
                    ladj, s.name, self.layout, self.max_plate_nesting, self.shape
                )
                part = constrained
            values[s.name] = part
        return values, log_jacobian

    def log_densities(self, u: torch.Tensor):
        """``(log pi_0(z), log p(x, z), log|det J|)``, each ``(C, N)``, at ``z = T(u)``."""
        values, log_jacobian = self.unflatten(u)
        with pyro.plate(PARTICLE_PLATE, self.shape[0], dim=self.particle_dim):
            model_trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(
                *self.args, **self.kwargs
            )
            if self.guide is not None and self.guide_sites is None:
                guide_trace = poutine.trace(poutine.condition(self.guide, data=values)).get_trace(
                    *self.args, **self.kwargs
                )
        log_joint = log_init = u.new_zeros(self.shape)
        for s in sample_sites(model_trace):
            log_p = site_log_prob(s, self.layout, self.max_plate_nesting, self.shape)
            log_joint = log_joint + log_p
            if self.guide is None and s["name"] in self.latent:
                log_init = log_init + log_p
        if self.guide is not None:
            sites = (
                sample_sites(guide_trace)
                if self.guide_sites is None
                else [{**s, "value": values[name]} for name, s in self.guide_sites.items()]
            )
            for s in sites:
                log_init = log_init + site_log_prob(
                    s, self.layout, self.max_plate_nesting, self.shape
                )
        return log_init, log_joint, log_jacobian

    def _keep_guide(self, values: dict[str, torch.Tensor]) -> None:
        """A guide with one latent site: its distribution depends on the data alone, so
        one pass of the guide serves every step (the others rerun it)."""
        if self.guide is None or len(self.latent) != 1:
            return
        with torch.no_grad(), pyro.plate(PARTICLE_PLATE, self.shape[0], dim=self.particle_dim):
            trace = poutine.trace(poutine.condition(self.guide, data=values)).get_trace(
                *self.args, **self.kwargs
            )
        self.guide_sites = {s["name"]: s for s in sample_sites(trace)}

    # -- the chains ------------------------------------------------------------------

    def _initial(self, seeds, start):
        """Each point's first state from its own stream, and its HMC generator."""
        c = self.shape[0]
        init = self.guide if self.guide is not None else self.model
        values: dict[str, list[torch.Tensor]] = {name: [] for name in self.latent}
        fns: dict[str, Any] = {}
        tensors = [a for a in self.args if torch.is_tensor(a)]
        device = tensors[0].device if tensors else torch.device("cpu")
        generators = []
        with torch.no_grad(), torch.random.fork_rng(devices=distributed.rng_devices(*tensors)):
            for i, seed in enumerate(seeds):
                torch.manual_seed(seed)
                with poutine.block(), pyro.plate(PARTICLE_PLATE, c, dim=self.particle_dim):
                    trace = poutine.trace(init).get_trace(*point_args(self.args, i), **self.kwargs)
                for name in self.latent:
                    site = trace.nodes[name]
                    values[name].append(site["value"])
                    fns[name] = site["fn"]
                generators.append(torch.Generator(device=device).manual_seed(mix_seed(seed, 0)))
        first = {}
        for name, parts in values.items():
            position = parts[0].dim() - fns[name].event_dim + self.layout.data_dim
            first[name] = torch.cat(parts, dim=position)
        self._describe(first, fns)
        if start is not None:  # the reverse chains: every chain at its point's exact sample
            # start: points first, no particle dim (as :func:`pyro_vae.ais.simulate` gives)
            first = {
                s.name: start[s.name]
                .movedim(0, s.position - 1)
                .unsqueeze(0)
                .expand(first[s.name].shape)
                .to(first[s.name])
                for s in self.sites
            }
        return first, generators

    def _normal(self, generators, like: torch.Tensor) -> torch.Tensor:
        """``(C, N, D)`` standard normal noise, point ``i`` from ``generators[i]``."""
        c, _, d = like.shape
        return torch.stack(
            [
                torch.randn(c, d, generator=g, device=like.device, dtype=like.dtype)
                for g in generators
            ],
            dim=1,
        )

    def _uniform(self, generators, like: torch.Tensor) -> torch.Tensor:
        c = like.shape[0]
        return torch.stack(
            [torch.rand(c, generator=g, device=like.device, dtype=like.dtype) for g in generators],
            dim=1,
        )

    def run(self, betas: torch.Tensor, seeds, start=None, step_sizes=None, on_step=None):
        """Anneal along ``betas``.

        :param start: exact latents per point, where every chain starts (the reverse run
            of BDMC); by default the initial distribution's draws.
        :param step_sizes: ``(T - 1, N)``, the step size of every transition, fixed in
            advance (the reverse run replays the forward run's); by default adapted.
        :param on_step: called after every step.
        :returns: ``(log weights (C, N), acceptance (N,), step sizes (T - 1, N))``.
        """
        first, generators = self._initial(seeds, start)
        self._keep_guide(first)
        u = self.flatten(first).detach()
        settings = self.settings
        num_steps = len(betas) - 1
        if step_sizes is not None and tuple(step_sizes.shape) != (num_steps - 1, self.shape[1]):
            raise ValueError(f"step_sizes must have shape {(num_steps - 1, self.shape[1])}")
        step = u.new_full((1, self.shape[1], 1), settings.step_size)
        low, high = STEP_SIZE_BOUNDS
        log_w = u.new_zeros(self.shape)
        accepted = u.new_zeros(self.shape[1])
        used = []
        held: dict[str, torch.Tensor] = {}
        beta = 0.0

        def potential(state: dict[str, torch.Tensor]) -> torch.Tensor:
            # NaN until this evaluation succeeds: an evaluation that Pyro's integrator
            # abandons (a registered numerical error) reads as a rejection, never as the
            # values of another state
            nan = u.new_full(self.shape, math.nan)
            held.update(init=nan, joint=nan, energy=nan)
            log_init, log_joint, log_jacobian = self.log_densities(state["u"])
            held["init"], held["joint"] = log_init.detach(), log_joint.detach()
            energy = -((1 - beta) * log_init + beta * log_joint + log_jacobian)
            held["energy"] = energy.detach()
            return energy.sum()

        def kinetic_grad(r: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return r  # unit mass matrix

        # a divergent trajectory (NaN or infinite parameters) is rejected below, so
        # distributions must not raise on it (as Pyro's MCMC, which disables validation)
        with torch.enable_grad(), pyro.validation_enabled(False):
            for t in range(1, num_steps + 1):
                beta = float(betas[t])
                if t == num_steps:  # the last weight needs no gradient and no transition
                    with torch.no_grad():
                        potential({"u": u})
                else:
                    grads, _ = potential_grad(potential, {"u": u})
                log_w = log_w + (beta - float(betas[t - 1])) * (held["joint"] - held["init"])
                if on_step is not None:
                    on_step()
                if t == num_steps:
                    break
                if step_sizes is not None:
                    step = step_sizes[t - 1].to(u).view(1, -1, 1)
                used.append(step.reshape(-1))
                energy0 = held["energy"]
                r = self._normal(generators, u)
                proposal, r_new, _, _ = velocity_verlet(
                    {"u": u},
                    {"u": r},
                    potential,
                    kinetic_grad,
                    step,
                    settings.leapfrog_steps,
                    z_grads=grads,
                )
                log_accept = (
                    energy0
                    + 0.5 * r.square().sum(-1)
                    - held["energy"]
                    - 0.5 * r_new["u"].square().sum(-1)
                )
                log_accept = torch.nan_to_num(log_accept, nan=-math.inf).clamp(max=0)
                accept = self._uniform(generators, u).log() < log_accept  # (C, N)
                u = torch.where(accept.unsqueeze(-1), proposal["u"], u).detach()
                rate = log_accept.exp().mean(0)  # (N,): mean acceptance probability
                accepted += rate
                if step_sizes is None:
                    move = settings.adapt_rate * (rate - TARGET_ACCEPT)
                    step = (step * move.exp().view(1, -1, 1)).clamp(low, high)
        transitions = len(used)
        acceptance = accepted / transitions if transitions else torch.full_like(accepted, math.nan)
        steps = torch.stack(used) if used else u.new_zeros(0, self.shape[1])
        return log_w.detach(), acceptance, steps


def _unmixed(support):
    """A mixture's support is its components' (a mixture prior over R^d covers R^d)."""
    while isinstance(support, torch.distributions.constraints.MixtureSameFamilyConstraint):
        support = support.base_constraint
    return support


def _check_latent(site: dict, guide_trace) -> None:
    """Refuse a latent site HMC cannot move, or whose guide covers another support."""
    name, fn = site["name"], site["fn"]
    if fn.support.is_discrete or fn.has_enumerate_support or site["infer"].get("enumerate"):
        raise ValueError(
            f"latent site {name!r} is discrete; AIS moves the latents with Hamiltonian "
            "Monte Carlo, which needs continuous ones (sum a discrete site out exactly by "
            "enumeration instead)"
        )
    if site["mask"] is not None:
        raise ValueError(
            f"latent site {name!r} is masked; AIS needs every latent site to carry its "
            "density (drop the mask, or sample the masked part elsewhere)"
        )
    if guide_trace is not None and name in guide_trace.nodes:
        guide_fn = guide_trace.nodes[name]["fn"]
        if repr(_unmixed(guide_fn.support)) != repr(_unmixed(fn.support)):
            raise ValueError(
                f"the guide's site {name!r} has support {guide_fn.support} but the model's "
                f"{fn.support}; AIS moves the chains over the model's, so the guide must "
                "have the same"
            )
