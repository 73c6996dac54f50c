"""Location-scale likelihoods with a fixed or learned scale: Gaussian and Laplace."""

from __future__ import annotations

from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods.base import SCALE_MODES, Likelihood, _split
from pyro_vae.limits import MAX_SIGMA, MIN_SIGMA, in_range
from pyro_vae.numerics import softplus_inverse


class _LocScale(Likelihood):
    """Shared machinery of :class:`Gaussian` and :class:`Laplace`: ``family(f(z), scale)``.

    The scale is a fixed number, or learned: ``"shared"`` (one scalar),
    ``"per-pixel"`` (one per data dimension) or ``"predicted"`` (a second decoder
    output per pixel and image). Learned scales are ``softplus(raw) + min_scale``,
    so they cannot collapse to zero and send the likelihood to infinity.
    """

    family: ClassVar[type]
    support = constraints.real

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
            if not in_range(scale, MIN_SIGMA, MAX_SIGMA):
                raise UsageError(
                    f"{self.name} likelihood: the scale must be a number in [{MIN_SIGMA:g}, "
                    f"{MAX_SIGMA:g}], got {scale}: for pixels in [0, 1] a smaller one "
                    "overflows the loss and a larger one ignores the data"
                )
            scale = float(scale)
            self.mode = "fixed"
            self.fixed_scale = scale

    def _raw_init(self) -> float:
        return softplus_inverse(self.init_scale - self.min_scale)

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
