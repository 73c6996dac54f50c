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

Run backwards from an exact posterior sample, the chain gives a stochastic *upper*
bound instead; on data simulated from the model, where such a sample exists, the two
bounds sandwich ``log p(x)`` (Grosse et al. 2015; :mod:`pyro_vae.bdmc`).

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

This module is the interface: every name below can be imported from it. It holds the
AIS of one batch of points; the settings, their defaults and the schedule are in
:mod:`pyro_vae.ais_settings`, the chains and :class:`AISResult` in
:mod:`pyro_vae.annealing`, BDMC and simulated data in :mod:`pyro_vae.bdmc`, and the runs
over whole splits (:func:`ais_dataset`, :func:`bdmc_dataset`) in
:mod:`pyro_vae.ais_datasets`.

References:

- R. M. Neal. Annealed importance sampling. Statistics and Computing 11, 2001.
- R. B. Grosse, Z. Ghahramani, R. P. Adams. Sandwiching the marginal likelihood using
  bidirectional Monte Carlo. arXiv:1511.02543, 2015.
- Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the Quantitative Analysis of
  Decoder-Based Generative Models. ICLR 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyro_vae.ais_datasets import DEFAULT_PAIRS_PER_BATCH, ais_dataset, bdmc_dataset
from pyro_vae.ais_settings import (
    ADAPT_RATE,
    DEFAULTS,
    INITS,
    SCHEDULES,
    SIGMOID_DELTA,
    STEP_SIZE,
    STEP_SIZE_BOUNDS,
    TARGET_ACCEPT,
    Settings,
    schedule,
)
from pyro_vae.annealing import AISResult, Annealer, ais_result, final_step_size
from pyro_vae.bdmc import BDMCResult, bdmc, simulate, simulated_data


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
    return ais_result(settings, log_w, acceptance, final_step_size(settings, steps))


def check(model: Callable, guide: Callable | None, *args: Any, init: str = "guide", **kwargs):
    """Raise the :class:`ValueError` that AIS would raise for these arguments, before any
    work: no ``"data"`` plate, no latent site, a discrete latent site, a guide that lacks
    a latent site, or an unknown ``init``.

    :param args: the model's arguments, one data point is enough.
    """
    settings = Settings.make(**{**DEFAULTS, "init": init})
    Annealer(model, guide, args, kwargs, settings)


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
