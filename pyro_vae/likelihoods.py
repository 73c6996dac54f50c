"""Likelihoods P(x|z): small objects that turn decoder output into a Pyro distribution.

A likelihood is a value handed to the model's constructor, so swapping
Bernoulli for Gaussian (or your own) changes nothing else in the model, the
guide or the training loop. Each one says how many decoder outputs it needs per
data dimension (:attr:`Likelihood.params_per_dim`), which values it supports,
and returns a distribution with one event dimension (the flattened pixels), so
that a ``pyro.plate("data")`` indexes data points.

A likelihood is an :class:`torch.nn.Module`, so learnable parameters (a learned
sigma, say) live in it and the model registers them with ``pyro.module`` like
the networks.

Registry names (``--likelihood``):

=====================  ==============================================  =====================
name                   P(x | z) from decoder output                    data
=====================  ==============================================  =====================
bernoulli              Bernoulli(logits)                               binary 0/1
continuous-bernoulli   ContinuousBernoulli(logits) (Loaiza-Ganem and   grey levels in [0, 1]
                       Cunningham 2019: normalized, unlike BCE)
gaussian               Normal(f(z), sigma): sigma fixed, or learned    real values
                       (shared, per-pixel, or predicted per pixel)
laplace                Laplace(f(z), scale), same scale options        real values
beta                   Beta(a, b) on pixels squeezed into (eps, 1-eps) grey levels in [0, 1]
discretized-logistic   logistic CDF over the pixel's bin (exact        k / (levels - 1)
                       probability of a discrete grey level)
=====================  ==============================================  =====================
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions.transforms import AffineTransform
from torch.nn import functional as F

from pyro_vae.errors import UsageError

SCALE_MODES = ("shared", "per-pixel", "predicted")
_NO_SHAPE = torch.Size()


class Likelihood(nn.Module):
    """Base class: map decoder output of shape ``(..., x_dim * params_per_dim)``
    to a distribution with ``event_shape == (x_dim,)``.

    Subclasses set :attr:`name` and :attr:`support` and implement :meth:`forward`;
    :meth:`mean`, :meth:`check_data` and :meth:`config` have defaults to override.
    """

    #: registry name, as used by ``--likelihood``
    name: ClassVar[str]
    #: human-readable support, for error messages
    support: ClassVar[str]
    #: True when ``log_prob`` is a log-probability of discrete values, not a density
    discrete: ClassVar[bool] = False
    #: decoder outputs needed per data dimension
    params_per_dim: int = 1

    def setup(self, x_dim: int) -> None:
        """Called once by the model with the data dimension (creates per-pixel parameters)."""

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        """:param out: decoder output, shape ``(..., x_dim * params_per_dim)``.
        :returns: a distribution over ``x`` with one event dimension."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """Mean of ``P(x|z)`` for decoder output ``out``, for pictures and reconstructions.

        :returns: tensor of shape ``(..., x_dim)``.
        """
        return self(out).mean

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyro_vae.errors.UsageError` if ``x`` lies outside the support.

        :param x: data of shape ``(N, x_dim)``.
        :param str what: how to name the data in the message.
        """
        if not bool(torch.isfinite(x).all()):
            self._reject(x, what, "NaN or infinite values", "remove or impute them")

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this likelihood via :func:`get_likelihood`."""
        return {"name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")

    def _reject(self, x: torch.Tensor, what: str, problem: str, fix: str) -> None:
        finite = x[torch.isfinite(x)]
        observed = (
            f"[{finite.min().item():.4g}, {finite.max().item():.4g}]"
            if finite.numel()
            else "none finite"
        )
        raise UsageError(
            f"the {self.name} likelihood needs {self.support}, but {what} has {problem} "
            f"(observed range {observed}). {fix}"
        )

    def _check_interval(self, x: torch.Tensor, what: str, lo: float, hi: float, fix: str) -> None:
        Likelihood.check_data(self, x, what)
        outside = ((x < lo) | (x > hi)).sum().item()
        if outside:
            self._reject(x, what, f"{outside} values outside [{lo}, {hi}]", fix)


def _split(out: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    """``(..., D * parts)`` -> ``parts`` tensors of shape ``(..., D)``."""
    return tuple(out.unflatten(-1, (parts, -1)).unbind(-2))


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with ``logits`` from the decoder: for binary data.

    ``log P(x|z) = sum_d x_d log p_d + (1 - x_d) log(1 - p_d)``, ``p = sigmoid(logits)``.
    """

    name = "bernoulli"
    support = "binary data (0 or 1)"
    discrete = True

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        super().check_data(x, what)
        non_binary = ((x != 0) & (x != 1)).sum().item()
        if non_binary:
            self._reject(
                x,
                what,
                f"{non_binary} values that are neither 0 nor 1",
                "Binarize it (--binarize static or --binarize dynamic), or pick a likelihood "
                "for grey levels (--likelihood gaussian, continuous-bernoulli, beta, ...).",
            )


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli pixels on ``[0, 1]`` with ``logits`` from the decoder.

    Binary cross-entropy on grey levels is not a log-density: it lacks the
    normalizing constant ``C(lambda)`` that makes ``C(lambda) lambda^x (1 - lambda)^(1 - x)``
    integrate to one over ``[0, 1]``. This likelihood includes it (Loaiza-Ganem and
    Cunningham, *The continuous Bernoulli: fixing a pervasive error in variational
    autoencoders*, NeurIPS 2019).
    """

    name = "continuous-bernoulli"
    support = "grey levels in [0, 1]"

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out).to_event(1)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        self._check_interval(x, what, 0.0, 1.0, "Scale pixels to [0, 1].")


class _LocScale(Likelihood):
    """Shared machinery of :class:`Gaussian` and :class:`Laplace`: ``family(f(z), scale)``.

    The scale is a fixed number, or learned: ``"shared"`` (one scalar),
    ``"per-pixel"`` (one per data dimension) or ``"predicted"`` (a second decoder
    output per pixel and image). Learned scales are ``softplus(raw) + min_scale``,
    so they cannot collapse to zero and send the likelihood to infinity.
    """

    family: ClassVar[type]
    support = "finite real values"

    def __init__(self, scale: float | str, min_scale: float, init_scale: float) -> None:
        super().__init__()
        self.min_scale = float(min_scale)
        self.init_scale = float(init_scale)
        if isinstance(scale, str):
            if scale not in SCALE_MODES:
                raise UsageError(
                    f"{self.name} likelihood: scale {scale!r} is neither a number nor one of "
                    f"{', '.join(SCALE_MODES)}"
                )
            if not 0 < self.min_scale < self.init_scale:
                raise UsageError(
                    f"{self.name} likelihood: need 0 < min scale ({self.min_scale}) < initial "
                    f"scale ({self.init_scale})"
                )
            self.mode = scale
            self.params_per_dim = 2 if scale == "predicted" else 1
            if scale == "shared":
                self.raw_scale = nn.Parameter(torch.tensor(self._raw_init()))
        else:
            scale = float(scale)
            if not (math.isfinite(scale) and scale > 0):
                raise UsageError(f"{self.name} likelihood: the scale must be > 0, got {scale}")
            self.mode = "fixed"
            self.fixed_scale = scale

    def _raw_init(self) -> float:
        return _inverse_softplus(self.init_scale - self.min_scale)

    def setup(self, x_dim: int) -> None:
        if self.mode == "per-pixel" and not hasattr(self, "raw_scale"):
            self.raw_scale = nn.Parameter(torch.full((x_dim,), self._raw_init()))

    def loc_scale(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """``(loc, scale)`` of every pixel for decoder output ``out``."""
        if self.mode == "fixed":
            return out, self.fixed_scale
        if self.mode == "predicted":
            loc, raw = _split(out, 2)
            return loc, F.softplus(raw) + self.min_scale
        return out, F.softplus(self.raw_scale) + self.min_scale

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.loc_scale(out)
        if not isinstance(scale, float):
            scale = scale.expand_as(loc)
        return self.family(loc, scale).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.loc_scale(out)[0]


class Gaussian(_LocScale):
    """Independent Gaussian pixels, ``x ~ N(f(z), sigma^2 I)``.

    A fixed ``sigma`` is the tutorial's regularization knob (Doersch 2016, section
    2.4.3): ``-log P(x|z) = ||x - f(z)||^2 / (2 sigma^2) + D log(sigma sqrt(2 pi))``,
    so a small sigma weighs reconstruction error heavily against the KL term.

    :param sigma: a number > 0 (fixed), or ``"shared"``, ``"per-pixel"`` or
        ``"predicted"`` (learned, see :class:`_LocScale`).
    :param float min_sigma: lower bound of a learned sigma.
    :param float init_sigma: starting value of a learned sigma.
    """

    name = "gaussian"
    family = dist.Normal

    def __init__(self, sigma: float | str = 0.1, min_sigma: float = 1e-3, init_sigma: float = 0.1):
        super().__init__(sigma, min_sigma, init_sigma)

    def config(self) -> dict[str, Any]:
        if self.mode == "fixed":
            return {"name": self.name, "sigma": self.fixed_scale}
        return {
            "name": self.name,
            "sigma": self.mode,
            "min_sigma": self.min_scale,
            "init_sigma": self.init_scale,
        }


class Laplace(_LocScale):
    """Independent Laplace pixels, ``x ~ Laplace(f(z), scale)``: an L1 reconstruction term.

    :param scale: a number > 0 (fixed), or ``"shared"``, ``"per-pixel"`` or ``"predicted"``.
    :param float min_scale: lower bound of a learned scale.
    :param float init_scale: starting value of a learned scale.
    """

    name = "laplace"
    family = dist.Laplace

    def __init__(self, scale: float | str = 0.1, min_scale: float = 1e-3, init_scale: float = 0.1):
        super().__init__(scale, min_scale, init_scale)

    def config(self) -> dict[str, Any]:
        if self.mode == "fixed":
            return {"name": self.name, "scale": self.fixed_scale}
        return {
            "name": self.name,
            "scale": self.mode,
            "min_scale": self.min_scale,
            "init_scale": self.init_scale,
        }


class Beta(Likelihood):
    """Independent Beta pixels with two positive decoder outputs per pixel.

    A Beta density is infinite or zero at exactly 0 and 1, where most MNIST pixels
    sit, so the data are squeezed: ``x' = eps + (1 - 2 eps) x`` with ``eps = 1e-3``
    by default, and the returned distribution is the Beta pushed back through that
    affine map. Its ``log_prob(x)`` is a proper density over ``x`` (it includes the
    ``log(1 - 2 eps)`` Jacobian term), comparable with the other densities.

    :param float eps: squeeze margin, in ``(0, 0.5)``.
    :param float min_concentration: lower bound on both concentrations.
    """

    name = "beta"
    support = "grey levels in [0, 1]"
    params_per_dim = 2

    def __init__(self, eps: float = 1e-3, min_concentration: float = 1e-2) -> None:
        super().__init__()
        if not 0 < eps < 0.5:
            raise UsageError(f"beta likelihood: eps must lie in (0, 0.5), got {eps}")
        self.eps = float(eps)
        self.min_concentration = float(min_concentration)

    def concentrations(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` per pixel, each ``softplus(raw) + min_concentration``."""
        a, b = _split(out, 2)
        return F.softplus(a) + self.min_concentration, F.softplus(b) + self.min_concentration

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        a, b = self.concentrations(out)
        width = 1 - 2 * self.eps
        unsqueeze = AffineTransform(loc=-self.eps / width, scale=1 / width)
        return dist.TransformedDistribution(dist.Beta(a, b), [unsqueeze]).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        a, b = self.concentrations(out)
        return (a / (a + b) - self.eps) / (1 - 2 * self.eps)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        self._check_interval(x, what, 0.0, 1.0, "Scale pixels to [0, 1].")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "eps": self.eps, "min_concentration": self.min_concentration}


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
    discrete = True
    params_per_dim = 2

    def __init__(self, levels: int = 256, min_scale: float = 1e-3) -> None:
        super().__init__()
        if int(levels) < 2:
            raise UsageError(f"discretized-logistic likelihood: levels must be >= 2, got {levels}")
        self.levels = int(levels)
        self.min_scale = float(min_scale)

    @property
    def support(self) -> str:  # type: ignore[override]
        return f"grey levels k / {self.levels - 1} for integer k in [0, {self.levels - 1}]"

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = _split(out, 2)
        scale = F.softplus(raw) + self.min_scale
        return DiscretizedLogisticDistribution(loc, scale, self.levels).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return _split(out, 2)[0].clamp(0, 1)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        self._check_interval(x, what, 0.0, 1.0, "Scale pixels to [0, 1].")
        off = (~_GreyLevels(self.levels).check(x)).sum().item()
        if off:
            self._reject(
                x,
                what,
                f"{off} values that are not multiples of 1/{self.levels - 1}",
                "Use the data set's own number of grey levels (levels=...), do not dequantize "
                "data for a discrete likelihood, or pick a continuous likelihood.",
            )

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "levels": self.levels, "min_scale": self.min_scale}


LIKELIHOODS: dict[str, type[Likelihood]] = {
    cls.name: cls
    for cls in (Bernoulli, ContinuousBernoulli, Gaussian, Laplace, Beta, DiscretizedLogistic)
}


def get_likelihood(name: str, **kwargs: Any) -> Likelihood:
    """Build a likelihood by registry name.

    :param str name: one of :data:`LIKELIHOODS`.
    :param kwargs: constructor arguments (``sigma`` for ``gaussian``, ...).
    :raises UsageError: for an unknown name.
    """
    if name not in LIKELIHOODS:
        raise UsageError(
            f"unknown likelihood {name!r}; valid names: {', '.join(sorted(LIKELIHOODS))}"
        )
    return LIKELIHOODS[name](**kwargs)
