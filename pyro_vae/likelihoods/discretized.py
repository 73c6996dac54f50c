"""The discretized logistic: exact probabilities of discrete grey levels."""

from __future__ import annotations

import math
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.nn import functional as F

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods.base import Likelihood, _split

_NO_SHAPE = torch.Size()


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(a))`` for ``a <= 0``, accurate near 0 and near -inf (Maechler 2012)."""
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def _log_sigmoid_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(upper) - sigmoid(lower))`` for ``upper >= lower``, without cancellation.

    In the right tail both sigmoids approach 1, so there the identity
    ``sigmoid(u) - sigmoid(l) = sigmoid(-l) - sigmoid(-u)`` moves the difference
    into the left tail, where ``log sigmoid`` keeps full precision.
    """
    flip = (upper + lower) > 0
    hi = torch.where(flip, -lower, upper)
    lo = torch.where(flip, -upper, lower)
    log_hi = F.logsigmoid(hi)
    return log_hi + _log1mexp(F.logsigmoid(lo) - log_hi)


class _GreyLevels(constraints.Constraint):
    """Values ``k / (levels - 1)`` for integer ``k`` in ``[0, levels - 1]``."""

    is_discrete = True
    event_dim = 0

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def check(self, value: torch.Tensor) -> torch.Tensor:
        k = value * (self.levels - 1)
        return (value >= 0) & (value <= 1) & ((k - k.round()).abs() < 1e-3)


class DiscretizedLogisticDistribution(TorchDistribution):
    """Probability of grey level ``x = k / (levels - 1)`` under a logistic density.

    ``P(x) = F(x + h) - F(x - h)`` with ``F`` the logistic CDF with ``loc`` and
    ``scale`` and ``h`` half a bin, where the first and last bins extend to
    ``-inf`` and ``+inf`` (Salimans et al., PixelCNN++, 2017), so the probabilities
    of all levels sum to one.

    :param loc: location, any shape.
    :param scale: positive scale, broadcastable with ``loc``.
    :param int levels: number of grey levels (256 for 8-bit images).
    """

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc, scale, levels: int = 256, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        self.levels = int(levels)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return _GreyLevels(self.levels)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogisticDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.levels = self.levels
        super(DiscretizedLogisticDistribution, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        half = 0.5 / (self.levels - 1)
        inv_scale = 1 / self.scale
        centered = value - self.loc
        upper, lower = inv_scale * (centered + half), inv_scale * (centered - half)
        interior = _log_sigmoid_difference(upper, lower)  # log(F(x + h) - F(x - h))
        first = value < half  # bin extends to -inf: log F(x + h)
        last = value > 1 - half  # bin extends to +inf: log (1 - F(x - h))
        return torch.where(
            first, F.logsigmoid(upper), torch.where(last, F.logsigmoid(-lower), interior)
        )

    def sample(self, sample_shape=_NO_SHAPE):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device, dtype=self.loc.dtype).clamp(
                1e-6, 1 - 1e-6
            )
            x = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            k = (x * (self.levels - 1)).round().clamp(0, self.levels - 1)
            return k / (self.levels - 1)

    @property
    def mean(self):
        # mean of the clamped continuous logistic: good enough for pictures
        return self.loc.clamp(0, 1)


class DiscretizedLogistic(Likelihood):
    """Exact probabilities of discrete grey levels: a discretized logistic per pixel.

    Two decoder outputs per pixel (location and scale). ``log_prob`` is a
    log-probability of the observed 8-bit (or ``levels``-level) values, so it is
    directly comparable across models in bits per dimension, with no dequantization.

    :param int levels: grey levels of the data (256 for 8-bit images, 17 for
        scikit-learn's digits).
    :param float min_scale: lower bound on the logistic scale.
    """

    name = "discretized-logistic"
    #: values in [0, 1]; :meth:`check_data` also checks that they are grey levels
    support = constraints.unit_interval
    discrete = True
    params_per_dim = 2

    def __init__(self, levels: int = 256, min_scale: float = 1e-3) -> None:
        super().__init__()
        if int(levels) < 2:
            raise UsageError(f"discretized-logistic likelihood: levels must be >= 2, got {levels}")
        self.levels = int(levels)
        self.min_scale = float(min_scale)

    @property
    def support_text(self) -> str:
        return f"grey levels k / {self.levels - 1} for integer k in [0, {self.levels - 1}]"

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = _split(out, 2)
        scale = F.softplus(raw) + self.min_scale
        return DiscretizedLogisticDistribution(loc, scale, self.levels).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return _split(out, 2)[0].clamp(0, 1)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        super().check_data(x, what)
        off = (~_GreyLevels(self.levels).check(x)).sum().item()
        if off:
            self._reject(
                x,
                what,
                f"{off} values that are not multiples of 1/{self.levels - 1}",
                "Use the data set's own number of grey levels (levels=...), do not dequantize "
                "data for a discrete likelihood, or pick a continuous likelihood.",
            )
