"""Conditional VAE (Doersch 2016, section 3).

The CVAE models ``P(Y|X) = integral P(Y|z, X) P(z|X) dz`` with recognition model
``Q(z|X, Y)``; ``X`` is an observed input (an argument, not a sample site) and
``Y`` the target site ``"y"``. With ``y`` given, the model observes it; with
``y=None`` it samples completions, and the guide then falls back to the prior so
that ``Predictive(model, guide)`` draws ``z ~ P(z|X)``.

The prior is the fixed ``N(0, I)`` of the tutorial, or a learned prior network
``P(z|X)`` (Sohn, Lee and Yan 2015): the ``prior`` constructor argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import UsageError
from pyro_vae.guides import GuideFamily, get_guide_family
from pyro_vae.likelihoods import Bernoulli, Likelihood, get_likelihood
from pyro_vae.models.base import Option
from pyro_vae.models.conditional import TASK, ConditionalModel
from pyro_vae.models.options import (
    GUIDE_OPTIONS,
    NETWORK,
    NETWORK_OPTIONS,
    PRIOR_CHOICES,
    Z_DIM,
    architecture,
    check_sizes,
)
from pyro_vae.networks import Architecture, GaussianEncoder, PartialImages

#: the CVAE's priors P(z|X): N(0, I) (Doersch; ``--prior standard`` says the same) or a
#: network of X (Sohn et al.); the unconditional families of :mod:`pyro_vae.priors` are
#: refused
PRIORS = ("fixed", "learned")
PRIOR = Option(
    "--prior",
    "the CVAE's P(z|X): fixed N(0, I) (Doersch) or learned (Sohn et al.)",
    default="fixed",
    choices=PRIOR_CHOICES,
)


class CVAE(ConditionalModel):
    """Conditional VAE with MLP networks, or convolutional ones on image tasks.

    :param int x_dim: size of the condition X.
    :param int y_dim: size of the target Y.
    :param int z_dim: latent dimension.
    :param hidden_dims: hidden widths of every network.
    :param likelihood: ``P(Y|z, X)``; Bernoulli by default.
    :param str prior: ``"fixed"`` (N(0, I)) or ``"learned"`` (a network P(z|X)).
    :param str task: the task (:data:`pyro_vae.tasks.TASKS`) that makes ``(X, Y)`` from
        a data set, or ``None`` when you pass the tensors yourself.
    :param guide_family: the family of ``Q(z|X, Y)`` (:mod:`pyro_vae.guides`); the
        diagonal Gaussian by default.
    :param str network: ``"mlp"`` (default) or ``"conv"``: every network places the
        pixels of X and Y on the image they come from and convolves it
        (:class:`~pyro_vae.networks.PartialImages`); needs ``task`` and ``image_shape``.
    :param image_shape: ``(height, width)`` of the images the task splits (for
        ``network="conv"``).
    :param str name: prefix in Pyro's param store; unique per instance by default.
    """

    kind = "cvae"
    summary = "P(z|X)P(Y|z,X) with the guide Q(z|X,Y) on a --task (Doersch section 3)"
    options = (TASK, PRIOR, Z_DIM, *NETWORK_OPTIONS, NETWORK, *GUIDE_OPTIONS)
    components: ClassVar[dict[str, Any]] = {
        "likelihood": lambda config: get_likelihood(**config),
        "guide_family": lambda config: get_guide_family(**config),
    }

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        prior: str = "fixed",
        task: str | None = None,
        guide_family: GuideFamily | str = "diagonal",
        network: str = "mlp",
        image_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        prior = "fixed" if prior == "standard" else prior
        if prior not in PRIORS:
            raise UsageError(
                f"the CVAE's prior is P(z|X), fixed at N(0, I) or learned as a network of X; "
                f"{{prior}} {prior} is a prior of the unconditional models (valid here: "
                f"{', '.join(PRIORS)}, standard)",
                settings=("prior",),
            )
        check_sizes("CVAE", x_dim=x_dim, y_dim=y_dim, z_dim=z_dim, hidden_dims=hidden_dims)
        self.x_dim, self.y_dim, self.z_dim = int(x_dim), int(y_dim), int(z_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.prior_kind = prior
        self.task = task
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.y_dim)
        self.guide_family = get_guide_family(guide_family)
        self.network = network
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        networks = self._networks()
        self.recognition = self.guide_family.build(self.x_dim + self.y_dim, networks, self.z_dim)
        self.prior_net = (
            GaussianEncoder(self.x_dim, networks, self.z_dim) if prior == "learned" else None
        )
        self.decoder = networks.decoder(
            self.z_dim + self.x_dim, self.y_dim * self.likelihood.params_per_dim
        )
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    def _networks(self) -> Architecture:
        """MLPs, or convolutions over the image that the task's X and Y come from."""
        if self.network != "conv":
            return architecture(self.network, self.hidden_dims, None)
        if self.task is None or self._image_shape is None:
            raise UsageError(
                "{network} conv for the CVAE needs the task and the image shape, to put X "
                "and Y back on their image; pass task= and image_shape=, or use {network} mlp",
                settings=("network",),
            )
        from pyro_vae.tasks import make_task

        task = make_task(self.task, self._image_shape, num_classes=self.x_dim)
        if (task.x_dim, task.y_dim) != (self.x_dim, self.y_dim):
            raise UsageError(
                f"task {self.task} on {self._image_shape[0]}x{self._image_shape[1]} images "
                f"has X and Y of {task.x_dim} and {task.y_dim} values, not {self.x_dim} and "
                f"{self.y_dim}"
            )
        x_pixels = (
            torch.full((self.x_dim,), -1) if self.task == "label" else task.x_mask.nonzero()[:, 0]
        )
        return PartialImages(
            self.hidden_dims, self._image_shape, x_pixels, task.y_mask.nonzero()[:, 0]
        )

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
        self.check_pair(x, y, "CVAE.model")
        self.pyro_module("decoder", self.decoder)
        if self.prior_net is not None:
            self.pyro_module("prior", self.prior_net)
        self.pyro_likelihood()
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior(x))
            return pyro.sample("y", self.likelihood(self._decode(z, x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``Q(z|X, Y)``; without ``y``, the prior ``P(z|X)`` (for completions).

        :param x: condition, ``(N, x_dim)``.
        :param y: target, ``(N, y_dim)``, or ``None``.
        """
        self.check_pair(x, y, "CVAE.guide")
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                if self.prior_net is not None:
                    self.pyro_module("prior", self.prior_net)
                pyro.sample("z", self.prior(x))
                return
            self.pyro_module("recognition", self.recognition)
            params = self.recognition(torch.cat([x, y], -1))
            pyro.sample("z", self.guide_family.distribution(self.recognition, params))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Mean of ``P(Y|z, X)`` for ``z ~ P(z|X)``: several completions per condition.

        :returns: ``(num_samples, N, y_dim)``.
        """
        self.check_pair(x, None, "CVAE.complete")
        z = self.prior(x).sample((num_samples,))  # (num_samples, N, z_dim)
        return self.likelihood.mean(self._decode(z, x))

    def completion_rows(self, x: torch.Tensor, num_samples: int) -> list[tuple[str, torch.Tensor]]:
        """``num_samples`` completions, each the mean of ``P(Y|z, X)`` for one ``z ~ P(z|X)``."""
        return [(f"completion {i + 1}", c) for i, c in enumerate(self.complete(x, num_samples))]
