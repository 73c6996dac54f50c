"""Likelihoods P(x|z): small objects that turn decoder output into a Pyro distribution.

A likelihood is a value handed to the model's constructor, so swapping
Bernoulli for Gaussian (or your own) changes nothing else in the model, the
guide or the training loop. Each one says how many decoder outputs it needs per
data dimension, which values it supports, and returns a distribution with one
event dimension (the flattened pixels), so a ``pyro.plate("data")`` indexes
data points.

A likelihood is an :class:`torch.nn.Module` so that learnable parameters (a
learned sigma, say) live in it and are registered with ``pyro.module`` by the
model, like the networks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.errors import UsageError


class Likelihood(nn.Module):
    """Base class: map decoder output of shape ``(..., x_dim * params_per_dim)``
    to a distribution with ``event_shape == (x_dim,)``.

    Subclasses set :attr:`name`, :attr:`params_per_dim` and :attr:`support`,
    and implement :meth:`forward`, :meth:`mean` and :meth:`check_data`.
    """

    #: registry name, as used by ``--likelihood``
    name: ClassVar[str]
    #: decoder outputs needed per data dimension
    params_per_dim: ClassVar[int] = 1
    #: human-readable support, for error messages
    support: ClassVar[str]

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

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this likelihood via :func:`get_likelihood`."""
        return {"name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")


def _range_text(x: torch.Tensor) -> str:
    return f"[{x.min().item():.4g}, {x.max().item():.4g}]"


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with ``logits`` from the decoder: for binary data.

    ``log P(x|z) = sum_d x_d log p_d + (1 - x_d) log(1 - p_d)``, ``p = sigmoid(logits)``.
    """

    name = "bernoulli"
    support = "binary data (0 or 1)"

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        non_binary = ((x != 0) & (x != 1)).sum().item()
        if non_binary:
            raise UsageError(
                f"the bernoulli likelihood needs {self.support}, but {what} has "
                f"{non_binary} values that are neither 0 nor 1 (range {_range_text(x)}). "
                "Binarize it (--binarize static or --binarize dynamic), or pick a likelihood "
                "for grey levels (--likelihood gaussian)."
            )


class Gaussian(Likelihood):
    """Independent Gaussian pixels, ``x ~ N(f(z), sigma^2 I)``, with a fixed ``sigma``.

    ``sigma`` is the tutorial's regularization knob (Doersch 2016, section 2.4.3):
    ``-log P(x|z) = ||x - f(z)||^2 / (2 sigma^2) + D log(sigma sqrt(2 pi))``, so a
    small sigma weighs reconstruction error heavily against the KL term.

    :param float sigma: standard deviation of every pixel, > 0.
    """

    name = "gaussian"
    support = "all finite real values"

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        if not sigma > 0:
            raise UsageError(f"gaussian likelihood: sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(out, self.sigma).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


LIKELIHOODS: dict[str, type[Likelihood]] = {cls.name: cls for cls in (Bernoulli, Gaussian)}


def get_likelihood(name: str, **kwargs: Any) -> Likelihood:
    """Build a likelihood by registry name.

    :param str name: one of :data:`LIKELIHOODS`.
    :param kwargs: constructor arguments (``sigma`` for ``gaussian``).
    :raises UsageError: for an unknown name.
    """
    if name not in LIKELIHOODS:
        raise UsageError(
            f"unknown likelihood {name!r}; valid names: {', '.join(sorted(LIKELIHOODS))}"
        )
    return LIKELIHOODS[name](**kwargs)
