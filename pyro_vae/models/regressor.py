"""The deterministic baseline of Doersch (2016), section 3.

One network maps X to the parameters of ``P(Y|X)`` directly, trained by maximum
likelihood with the same likelihoods as the CVAE. It has no latent variable, so its
log-likelihood is exact, and ``Trace_ELBO`` is exactly its negative log-likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch

from pyro_vae.likelihoods import Bernoulli, Likelihood
from pyro_vae.models.conditional import TASK, ConditionalModel
from pyro_vae.models.options import NETWORK_OPTIONS, check_sizes
from pyro_vae.networks import MLP


class Regressor(ConditionalModel):
    """Deterministic baseline: ``P(Y|X) = likelihood(f(X))``, trained by maximum likelihood.

    It has the CVAE's signature (``model(x, y)``, ``guide(x, y)``) so that
    :func:`pyro_vae.fit` trains it.

    :param int x_dim: size of X.
    :param int y_dim: size of Y.
    :param hidden_dims: hidden widths.
    :param likelihood: ``P(Y|X)``; Bernoulli by default.
    :param str task: as for :class:`~pyro_vae.models.cvae.CVAE`.
    :param str name: prefix in Pyro's param store; unique per instance by default.
    """

    kind = "regressor"
    summary = "the deterministic P(Y|X) baseline on a --task, exact log-likelihood"
    options = (TASK, *NETWORK_OPTIONS)
    latent_sites = ()
    random_completions = False

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        task: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        check_sizes("Regressor", x_dim=x_dim, y_dim=y_dim, hidden_dims=hidden_dims)
        self.x_dim, self.y_dim = int(x_dim), int(y_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.task = task
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.y_dim)
        self.net = MLP(self.x_dim, self.hidden_dims, self.y_dim * self.likelihood.params_per_dim)

    def describe(self) -> str:
        """``"regressor on task label"``."""
        return f"regressor on task {self.task}"

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``P(Y|X)``; observes ``y`` when given."""
        self.check_pair(x, y, "Regressor.model")
        self.pyro_module("net", self.net)
        self.pyro_likelihood()
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("y", self.likelihood(self.net(x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """No latent variables: nothing to guess."""

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exact ``log P(y|x)`` per data point, ``(N,)``."""
        self.check_pair(x, y, "Regressor.exact_log_likelihood")
        return self.likelihood(self.net(x)).log_prob(y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``P(Y|X)``, ``(N, y_dim)``."""
        self.check_pair(x, None, "Regressor.predict")
        return self.likelihood.mean(self.net(x))

    def completion_rows(self, x: torch.Tensor, num_samples: int) -> list[tuple[str, torch.Tensor]]:
        """One row, the regressor's mean: it has nothing random to draw."""
        return [("regressor mean", self.predict(x))]
