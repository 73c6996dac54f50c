"""Conditional VAE (Doersch 2016, section 3) and its deterministic baseline.

The CVAE models ``P(Y|X) = integral P(Y|z, X) P(z|X) dz`` with recognition model
``Q(z|X, Y)``; ``X`` is an observed input (an argument, not a sample site) and
``Y`` the target site ``"y"``. With ``y`` given, the model observes it; with
``y=None`` it samples completions, and the guide then falls back to the prior so
that ``Predictive(model, guide)`` draws ``z ~ P(z|X)``.

The prior is the fixed ``N(0, I)`` of the tutorial, or a learned prior network
``P(z|X)`` (Sohn, Lee and Yan 2015): the ``prior`` constructor argument.

:class:`Regressor` is the deterministic model of section 3: one network maps X to
the parameters of ``P(Y|X)`` directly, trained by maximum likelihood with the same
likelihood. It has no latent variable, so its log-likelihood is exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import Bernoulli, Likelihood, get_likelihood
from pyro_vae.networks import MLP, GaussianEncoder

PRIORS = ("fixed", "learned")
_ids = itertools.count()


def _check_pair(x: torch.Tensor, y: torch.Tensor | None, x_dim: int, y_dim: int, what: str) -> None:
    if x.ndim != 2 or x.shape[1] != x_dim:
        raise UsageError(
            f"{what}: the condition x has shape {tuple(x.shape)}; expected (N, {x_dim})"
        )
    if y is not None and (y.ndim != 2 or y.shape != (x.shape[0], y_dim)):
        raise UsageError(
            f"{what}: the target y has shape {tuple(y.shape)}; expected ({x.shape[0]}, {y_dim})"
        )


class CVAE(nn.Module):
    """Conditional VAE with MLP networks.

    :param int x_dim: size of the condition X.
    :param int y_dim: size of the target Y.
    :param int z_dim: latent dimension.
    :param hidden_dims: hidden widths of every network.
    :param likelihood: ``P(Y|z, X)``; Bernoulli by default.
    :param str prior: ``"fixed"`` (N(0, I)) or ``"learned"`` (a network P(z|X)).
    :param str name: prefix in Pyro's param store; unique per instance by default.
    """

    max_plate_nesting = 1

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        prior: str = "fixed",
        name: str | None = None,
    ) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise UsageError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
        if min(x_dim, y_dim, z_dim, *hidden_dims) < 1:
            raise UsageError("CVAE sizes must be at least 1")
        self.x_dim, self.y_dim, self.z_dim = int(x_dim), int(y_dim), int(z_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.prior_kind = prior
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.y_dim)
        self.name = name if name is not None else f"cvae{next(_ids)}"
        self.recognition = GaussianEncoder(self.x_dim + self.y_dim, self.hidden_dims, self.z_dim)
        self.prior_net = (
            GaussianEncoder(self.x_dim, self.hidden_dims, self.z_dim)
            if prior == "learned"
            else None
        )
        self.decoder = MLP(
            self.z_dim + self.x_dim,
            self.hidden_dims[::-1],
            self.y_dim * self.likelihood.params_per_dim,
        )
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    def prior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """``P(z|X)``: N(0, I), or the learned prior network's diagonal Gaussian."""
        if self.prior_net is None:
            return (
                dist.Normal(self.prior_loc, self.prior_scale)
                .expand([x.shape[0], self.z_dim])
                .to_event(1)
            )
        loc, scale = self.prior_net(x)
        return dist.Normal(loc, scale).to_event(1)

    def _decode(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, x.expand(*z.shape[:-1], x.shape[-1])], -1))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``P(z|X) P(Y|z, X)``; observes ``y`` when given, samples it otherwise.

        :param x: condition, ``(N, x_dim)``.
        :param y: target, ``(N, y_dim)``, or ``None``.
        :returns: the value of site ``"y"``.
        """
        _check_pair(x, y, self.x_dim, self.y_dim, "CVAE.model")
        pyro.module(f"{self.name}_decoder", self.decoder)
        if self.prior_net is not None:
            pyro.module(f"{self.name}_prior", self.prior_net)
        if any(p.requires_grad for p in self.likelihood.parameters()):
            pyro.module(f"{self.name}_likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior(x))
            return pyro.sample("y", self.likelihood(self._decode(z, x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``Q(z|X, Y)``; without ``y``, the prior ``P(z|X)`` (for completions).

        :param x: condition, ``(N, x_dim)``.
        :param y: target, ``(N, y_dim)``, or ``None``.
        """
        _check_pair(x, y, self.x_dim, self.y_dim, "CVAE.guide")
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                if self.prior_net is not None:
                    pyro.module(f"{self.name}_prior", self.prior_net)
                pyro.sample("z", self.prior(x))
                return
            pyro.module(f"{self.name}_recognition", self.recognition)
            loc, scale = self.recognition(torch.cat([x, y], -1))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Mean of ``P(Y|z, X)`` for ``z ~ P(z|X)``: several completions per condition.

        :returns: ``(num_samples, N, y_dim)``.
        """
        _check_pair(x, None, self.x_dim, self.y_dim, "CVAE.complete")
        z = self.prior(x).sample((num_samples,))  # (num_samples, N, z_dim)
        return self.likelihood.mean(self._decode(z, x))

    def check_data(self, x: torch.Tensor, y: torch.Tensor, what: str = "data") -> None:
        """Shapes of ``(x, y)`` and the support of the likelihood on ``y``.

        :raises UsageError: naming the mismatch.
        """
        _check_pair(x, y, self.x_dim, self.y_dim, what)
        self.likelihood.check_data(y, f"the target y of {what}")

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain data (see :meth:`from_config`)."""
        return {
            "kind": "cvae",
            "x_dim": self.x_dim,
            "y_dim": self.y_dim,
            "z_dim": self.z_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood.config(),
            "prior": self.prior_kind,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CVAE:
        """Build an untrained CVAE from :meth:`config` output."""
        config = dict(config)
        config.pop("kind", None)
        return cls(likelihood=get_likelihood(**config.pop("likelihood")), **config)


class Regressor(nn.Module):
    """Deterministic baseline: ``P(Y|X) = likelihood(f(X))``, trained by maximum likelihood.

    It has the CVAE's signature (``model(x, y)``, ``guide(x, y)``) so that
    :func:`pyro_vae.fit` trains it; with no latent site, ``Trace_ELBO`` is exactly
    the negative log-likelihood.

    :param int x_dim: size of X.
    :param int y_dim: size of Y.
    :param hidden_dims: hidden widths.
    :param likelihood: ``P(Y|X)``; Bernoulli by default.
    """

    max_plate_nesting = 1

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if min(x_dim, y_dim, *hidden_dims) < 1:
            raise UsageError("Regressor sizes must be at least 1")
        self.x_dim, self.y_dim = int(x_dim), int(y_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.y_dim)
        self.net = MLP(self.x_dim, self.hidden_dims, self.y_dim * self.likelihood.params_per_dim)
        self.name = name if name is not None else f"regressor{next(_ids)}"

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``P(Y|X)``; observes ``y`` when given."""
        _check_pair(x, y, self.x_dim, self.y_dim, "Regressor.model")
        pyro.module(f"{self.name}_net", self.net)
        if any(p.requires_grad for p in self.likelihood.parameters()):
            pyro.module(f"{self.name}_likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("y", self.likelihood(self.net(x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """No latent variables: nothing to guess."""

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exact ``log P(y|x)`` per data point, ``(N,)``."""
        _check_pair(x, y, self.x_dim, self.y_dim, "Regressor.log_likelihood")
        return self.likelihood(self.net(x)).log_prob(y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``P(Y|X)``, ``(N, y_dim)``."""
        _check_pair(x, None, self.x_dim, self.y_dim, "Regressor.predict")
        return self.likelihood.mean(self.net(x))

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain data (see :meth:`from_config`)."""
        return {
            "kind": "regressor",
            "x_dim": self.x_dim,
            "y_dim": self.y_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood.config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Regressor:
        """Build an untrained regressor from :meth:`config` output."""
        config = dict(config)
        config.pop("kind", None)
        return cls(likelihood=get_likelihood(**config.pop("likelihood")), **config)

    def check_data(self, x: torch.Tensor, y: torch.Tensor, what: str = "data") -> None:
        """As :meth:`CVAE.check_data`."""
        _check_pair(x, y, self.x_dim, self.y_dim, what)
        self.likelihood.check_data(y, f"the target y of {what}")
