"""The settings of annealed importance sampling: their defaults, their checks, and the
schedule of inverse temperatures ``beta_t`` they give.

:mod:`pyro_vae.ais` re-exports every public name here; the chains that use the settings
are in :mod:`pyro_vae.annealing`.

References:

- Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the Quantitative Analysis of
  Decoder-Based Generative Models. ICLR 2017.
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

import torch

#: the initial distributions AIS can start from
INITS = ("guide", "prior")
#: the annealing schedules: Wu et al.'s sigmoid, or evenly spaced
SCHEDULES = ("sigmoid", "linear")
#: steepness of the sigmoid schedule (Wu et al. use 4)
SIGMOID_DELTA = 4.0
#: acceptance rate the step sizes are adapted towards (Wu et al., after Neal 2011)
TARGET_ACCEPT = 0.65
#: after each transition, ``log step_size += ADAPT_RATE * (acceptance - TARGET_ACCEPT)``
#: per point: the step size settles where the mean acceptance is the target, and moves
#: fast while it is far from it (see :func:`pyro_vae.ais.annealed_importance_sampling`)
ADAPT_RATE = 0.5
#: the step size of the first transition, and the range adaptation keeps it in
STEP_SIZE = 0.01
STEP_SIZE_BOUNDS = (1e-4, 0.5)

#: the settings of :func:`~pyro_vae.ais.ais_dataset` and :func:`~pyro_vae.ais.bdmc_dataset`
#: that are not given
DEFAULTS = {
    "num_steps": 500,
    "num_chains": 8,
    "leapfrog_steps": 10,
    "init": "guide",
    "schedule_kind": "sigmoid",
    "step_size": STEP_SIZE,
    "adapt_rate": ADAPT_RATE,
}


class Settings(NamedTuple):
    """Checked AIS settings (see :func:`pyro_vae.ais.annealed_importance_sampling`)."""

    num_steps: int
    num_chains: int
    leapfrog_steps: int
    init: str
    schedule_kind: str
    step_size: float
    adapt_rate: float

    @classmethod
    def make(
        cls,
        num_steps,
        num_chains,
        leapfrog_steps,
        init,
        schedule_kind,
        step_size,
        adapt_rate=ADAPT_RATE,
    ):
        num_steps = check_count("num_steps", num_steps)
        num_chains = check_count("num_chains", num_chains)
        leapfrog_steps = check_count("leapfrog_steps", leapfrog_steps)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        if schedule_kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule_kind!r}; valid: {', '.join(SCHEDULES)}")
        if not (isinstance(step_size, (int, float)) and 0 < step_size < 1):
            raise ValueError(f"step_size must lie in (0, 1), got {step_size}")
        if not (isinstance(adapt_rate, (int, float)) and 0 <= adapt_rate < math.inf):
            raise ValueError(f"adapt_rate must be finite and at least 0, got {adapt_rate}")
        return cls(
            num_steps,
            num_chains,
            leapfrog_steps,
            init,
            schedule_kind,
            float(step_size),
            float(adapt_rate),
        )


def check_count(name: str, value) -> int:
    """``value`` as an ``int`` (Python, numpy or torch integers) if it is at least 1."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


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


def with_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with :data:`DEFAULTS` for those not given.

    :raises TypeError: a name that is not an AIS setting.
    """
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown AIS settings: {', '.join(unknown)}")
    return {**DEFAULTS, **settings}
