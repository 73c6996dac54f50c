"""Small numerical helpers shared by the guide families and the likelihoods."""

from __future__ import annotations

import torch

#: inputs below this are raised to it: the inverse of softplus diverges at 0
SOFTPLUS_INVERSE_FLOOR = 1e-6


def softplus_inverse(y: torch.Tensor | float) -> torch.Tensor | float:
    """The ``x`` with ``softplus(x) = log(1 + exp(x)) = y``, for ``y > 0``.

    Written ``y + log(-expm1(-y))`` so that it is exact for small ``y`` and does not
    overflow for large ones; ``y`` is first raised to :data:`SOFTPLUS_INVERSE_FLOOR`.

    :param y: a tensor, or a Python float (then computed in double precision and
        returned as a float).
    """
    if isinstance(y, torch.Tensor):
        y = y.clamp_min(SOFTPLUS_INVERSE_FLOOR)
        return y + torch.log(-torch.expm1(-y))
    return float(softplus_inverse(torch.tensor(float(y), dtype=torch.float64)))
