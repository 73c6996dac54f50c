"""The base class of every likelihood, and helpers its subclasses share."""

from __future__ import annotations

from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.errors import UsageError

SCALE_MODES = ("shared", "per-pixel", "predicted")


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
    #: True when the data must be 0 or 1: training binarizes grey levels by default
    binary: ClassVar[bool] = False
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
        """Raise :class:`~pyro_vae.errors.UsageError` if ``x`` lies outside the support,
        or if a density (a likelihood that is not :attr:`discrete`) meets data of only 0s
        and 1s, such as binarized images.

        :param x: data of shape ``(N, x_dim)``.
        :param str what: how to name the data in the message.
        """
        if not bool(torch.isfinite(x).all()):
            self._reject(x, what, "NaN or infinite values", "remove or impute them")
        if not self.discrete and x.numel() and bool(((x == 0) | (x == 1)).all()):
            raise UsageError(
                f"the {self.name} likelihood is a density of continuous values, but {what} "
                "holds only 0s and 1s (binarized data): on two values a density grows "
                "without bound, and its log-likelihood is no probability of the data. Use "
                "{likelihood} bernoulli for binary data, or train on the grey levels "
                "({binarize} none)",
                settings=("likelihood", "binarize"),
            )

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this likelihood via :func:`get_likelihood`."""
        return {"name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")

    def _reject(
        self, x: torch.Tensor, what: str, problem: str, fix: str, settings: tuple[str, ...] = ()
    ) -> None:
        finite = x[torch.isfinite(x)]
        observed = (
            f"[{finite.min().item():.4g}, {finite.max().item():.4g}]"
            if finite.numel()
            else "none finite"
        )
        raise UsageError(
            f"the {self.name} likelihood needs {self.support}, but {what} has {problem} "
            f"(observed range {observed}). {fix}",
            settings=settings,
        )

    def _check_interval(self, x: torch.Tensor, what: str, lo: float, hi: float, fix: str) -> None:
        Likelihood.check_data(self, x, what)
        outside = ((x < lo) | (x > hi)).sum().item()
        if outside:
            self._reject(x, what, f"{outside} values outside [{lo}, {hi}]", fix)


def _split(out: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    """``(..., D * parts)`` -> ``parts`` tensors of shape ``(..., D)``."""
    return tuple(out.unflatten(-1, (parts, -1)).unbind(-2))
