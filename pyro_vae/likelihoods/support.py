"""A likelihood's support, a constraint of :mod:`pyro.distributions.constraints`, in words.

Every likelihood declares the values its data may take as a Pyro constraint
(``constraints.boolean``, ``constraints.unit_interval``, ``constraints.real``, ...):
:meth:`~pyro_vae.likelihoods.Likelihood.check_data` checks data against it, and
whether the data must be binary (:func:`is_binary`) or the likelihood is a
probability of discrete values follows from it. This module turns a constraint into
the words of the messages: what the likelihood needs, what the data got wrong, and the
fix.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.constraints import Constraint

_BOOLEAN = type(constraints.boolean)
_REAL = type(constraints.real)
_INTEGER_AT_LEAST = type(constraints.nonnegative_integer)
#: the fix of data that are not 0 or 1, for a likelihood of binary data
BINARY_FIX = (
    "Binarize it (set {binarize} to static or dynamic), or pick a likelihood for grey "
    "levels (set {likelihood} to gaussian, continuous-bernoulli, beta, ...)."
)


def elementwise(constraint: Constraint) -> Constraint:
    """``constraint`` without the :func:`constraints.independent` wrappers that
    reinterpret batch dimensions as event dimensions: it then judges every value alone."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def is_binary(constraint: Constraint) -> bool:
    """Whether ``constraint`` admits 0 and 1 only: :data:`constraints.boolean`, or
    ``constraints.integer_interval(0, 1)``."""
    c = elementwise(constraint)
    if isinstance(c, _BOOLEAN):
        return True
    return isinstance(c, constraints.integer_interval) and (c.lower_bound, c.upper_bound) == (0, 1)


def describe(constraint: Constraint) -> str:
    """The values ``constraint`` admits, in words: ``"binary data (0 or 1)"``,
    ``"values in [0, 1]"``, ``"real values"``, ..."""
    c = elementwise(constraint)
    if is_binary(c):
        return "binary data (0 or 1)"
    if isinstance(c, _REAL):
        return "real values"
    if isinstance(c, constraints.integer_interval):
        return f"integers from {c.lower_bound} to {c.upper_bound}"
    if isinstance(c, _INTEGER_AT_LEAST):
        return f"integers of at least {c.lower_bound}"
    if isinstance(c, constraints.interval):
        return f"values in [{c.lower_bound:g}, {c.upper_bound:g}]"
    if isinstance(c, constraints.half_open_interval):
        return f"values in [{c.lower_bound:g}, {c.upper_bound:g})"
    if isinstance(c, constraints.greater_than):
        return f"values above {c.lower_bound:g}"
    if isinstance(c, constraints.greater_than_eq):
        return f"values of at least {c.lower_bound:g}"
    if isinstance(c, constraints.less_than):
        return f"values below {c.upper_bound:g}"
    return f"values in {c}"


def inside(constraint: Constraint, x: torch.Tensor) -> torch.Tensor:
    """Which values of ``x`` lie in ``constraint``: a boolean tensor, one entry per value
    (per event, for a constraint on vectors such as :data:`constraints.simplex`)."""
    return elementwise(constraint).check(x)


def outside(constraint: Constraint, count: int) -> tuple[str, str, tuple[str, ...]]:
    """``(problem, fix, settings)`` of a message about ``count`` values outside
    ``constraint``; ``settings`` lists the placeholders of ``fix``."""
    c = elementwise(constraint)
    if is_binary(c):
        return f"{count} values that are neither 0 nor 1", BINARY_FIX, ("binarize", "likelihood")
    if isinstance(c, constraints.interval) and (c.lower_bound, c.upper_bound) == (0, 1):
        bounds = f"[{float(c.lower_bound)}, {float(c.upper_bound)}]"
        return f"{count} values outside {bounds}", "Scale pixels to [0, 1].", ()
    return (
        f"{count} values outside them",
        "Transform the data into the support, or choose another {likelihood}.",
        ("likelihood",),
    )


__all__ = ["BINARY_FIX", "describe", "elementwise", "inside", "is_binary", "outside"]
