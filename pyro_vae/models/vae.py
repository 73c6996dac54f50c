"""The VAE of Doersch (2016), section 2, as a Pyro model and guide.

Model ``P(z) P(x|z)``: ``z ~ N(0, I)`` and ``x | z ~ likelihood(decoder(z))``.
Guide ``Q(z|x)`` from a guide family (:mod:`pyro_vae.guides`): by default the
tutorial's ``N(loc(x), diag(scale(x)^2))``. Both share the signature
``(x)`` and the site names ``"data"`` (plate, dim -1), ``"z"`` and ``"x"``, so
any Pyro objective or handler can consume them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.diagnostics import active_units, kl_term
from pyro_vae.errors import UsageError
from pyro_vae.guides import GuideFamily, get_guide_family
from pyro_vae.likelihoods import Bernoulli, Likelihood, get_likelihood
from pyro_vae.models.base import Model
from pyro_vae.models.options import (
    GUIDE_OPTIONS,
    NETWORK,
    NETWORK_OPTIONS,
    PRIOR_OPTIONS,
    Z_DIM,
    architecture,
    check_sizes,
    guide_family_from_options,
    initialize_prior,
    likelihood_from_options,
    prior_family_from_options,
)
from pyro_vae.priors import PriorFamily, StandardNormal, draw, get_prior, learned


class VAE(Model):
    """Variational autoencoder: an encoder and a decoder network (MLPs, or convolutions
    for images).

    :param int x_dim: data dimension (pixels per image, flattened).
    :param int z_dim: latent dimension.
    :param hidden_dims: encoder hidden widths; the decoder mirrors them.
    :param likelihood: a :class:`~pyro_vae.likelihoods.Likelihood` for ``P(x|z)``;
        :class:`~pyro_vae.likelihoods.Bernoulli` by default.
    :param image_shape: ``(height, width)`` for pictures; ``None`` for non-image data.
    :param guide_family: a :class:`~pyro_vae.guides.GuideFamily` (or its name) for
        ``Q(z|x)``; :class:`~pyro_vae.guides.DiagonalGaussian` by default.
    :param str network: ``"mlp"`` (default) or ``"conv"``: two stride-2 convolutions
        before the hidden layers of the encoder, mirrored by transposed convolutions
        in the decoder (:class:`~pyro_vae.networks.Convolutional`); needs
        ``image_shape``.
    :param str name: prefix in Pyro's param store; unique per instance by default.
    :param prior_family: a :class:`~pyro_vae.priors.PriorFamily` (or its name) for
        ``P(z)``: ``N(0, I)`` by default; a mixture, the VampPrior or a flow are learned
        with the networks. (After ``name``, so that subclasses that pass the arguments
        by position keep working.)

    Example::

        vae = VAE(784, z_dim=20, likelihood=Gaussian(sigma=0.1), guide_family=IAF(2))
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        svi.step(x)  # x: (batch, 784)
    """

    kind = "vae"
    summary = "P(z)P(X|z) with the guide Q(z|X) (Doersch section 2)"
    options = (Z_DIM, *NETWORK_OPTIONS, NETWORK, *GUIDE_OPTIONS, *PRIOR_OPTIONS)
    components: ClassVar[dict[str, Any]] = {
        "likelihood": lambda config: get_likelihood(**config),
        "guide_family": lambda config: get_guide_family(**config),
        "prior_family": lambda config: get_prior(**config),
    }
    hints: ClassVar[dict[str, str]] = {
        "completions": "it has no condition; draw from it with `pyro-vae sample`"
    }

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        image_shape: Sequence[int] | None = None,
        guide_family: GuideFamily | str = "diagonal",
        network: str = "mlp",
        name: str | None = None,
        prior_family: PriorFamily | str = "standard",
    ) -> None:
        super().__init__(name)
        check_sizes("VAE", x_dim=x_dim, z_dim=z_dim, hidden_dims=hidden_dims)
        self.x_dim = int(x_dim)
        self.z_dim = int(z_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.x_dim)  # per-pixel parameters need the data dimension
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        self.guide_family = get_guide_family(guide_family)
        self.network = network
        networks = architecture(network, self.hidden_dims, self._image_shape)
        self.encoder = self.guide_family.build(self.x_dim, networks, self.z_dim)
        self.decoder = networks.decoder(self.z_dim, self.x_dim * self.likelihood.params_per_dim)
        # N(0, I) as buffers: they follow .to(device), are not trained, and keep the
        # checkpoint keys of the runs made before priors were values
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))
        self.prior_family = get_prior(prior_family)
        if self.prior_family.name == "vamp" and self.guide_family.name == "iaf":
            raise UsageError(
                "the VampPrior is the density of Q(z|u) at any z, and the inverse "
                "autoregressive flow of {guide} iaf gives its density only at its own "
                "samples; choose {guide} diagonal or full-covariance with {prior} vamp",
                settings=("guide", "prior"),
            )
        self.prior_family.setup(self.z_dim, self.x_dim)

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset) -> VAE:
        """The VAE of ``pyro-vae train`` for ``dataset``."""
        model = cls(
            dataset.x_dim,
            z_dim=options["z_dim"],
            hidden_dims=options["hidden_dims"],
            likelihood=likelihood_from_options(options, dataset),
            image_shape=dataset.image_shape,
            guide_family=guide_family_from_options(options),
            network=options.get("network", "mlp"),
            prior_family=prior_family_from_options(options),
        )
        initialize_prior(model.prior_family, dataset)
        return model

    def describe(self) -> str:
        """``"VAE"``, or ``"VAE, mixture prior (components=10)"`` with a learned prior."""
        if isinstance(self.prior_family, StandardNormal):
            return type(self).__name__
        return f"{type(self).__name__}, {self.prior_family.describe()}"

    @property
    def data_dims(self) -> tuple[int]:
        """``(x_dim,)``: the model takes the images alone."""
        return (self.x_dim,)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the images, or ``None``."""
        return self._image_shape

    def model(self, x: torch.Tensor) -> None:
        """Generative model ``P(z) P(x|z)``.

        :param x: observed data, shape ``(batch, x_dim)``.
        """
        self.pyro_module("decoder", self.decoder)
        self.pyro_likelihood()
        prior = self.prior()
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", prior)  # (batch, z_dim), or (particles, batch, z_dim)
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def prior(self) -> dist.TorchDistribution:
        """``P(z)``, event shape ``(z_dim,)``; a learned prior's parameters (and, for the
        VampPrior, the encoder) are registered with Pyro where it is called."""
        if isinstance(self.prior_family, StandardNormal):
            return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
        self.pyro_module("prior", self.prior_family)
        if self.prior_family.name == "vamp":
            self.pyro_module("encoder", self.encoder)
        return self.prior_family.distribution(self._encode)

    def _encode(self, u: torch.Tensor) -> dist.TorchDistribution:
        """``Q(z|u)`` for a batch of inputs: the VampPrior's components."""
        return self.guide_family.distribution(self.encoder, self.encoder(u))

    def guide(self, x: torch.Tensor) -> None:
        """Recognition model ``Q(z|x)``, a member of the guide family.

        :param x: observed data, shape ``(batch, x_dim)``.
        """
        self.pyro_module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            q = self.guide_family.distribution(self.encoder, self.encoder(x))
            pyro.sample("z", q)  # batch (batch,), event (z_dim,)

    def guide_parts(self) -> tuple[GuideFamily, torch.nn.Module]:
        """``(guide_family, encoder)``: ``Q(z|x)`` for :func:`pyro_vae.gaps.decompose_gap`."""
        return self.guide_family, self.encoder

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor) -> dict[str, Any]:
        """On ``x``: the KL term ``E_Q[log Q(z|X) - log P(z)]`` (nats per point, 10 draws
        of the guide each), the active units of the guide's centre (Burda et al.), and
        for a mixture or VampPrior what its components explain
        (:func:`~pyro_vae.priors.learned`)."""
        kl, draws = kl_term(self.model, self.guide, x, ("z",))
        center = self.guide_family.center(self.encoder, self.encoder(x))
        units = active_units(center).count if len(x) > 1 else None
        return {"kl_term": kl, "active_units": units, **learned(self.prior(), draws["z"])}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``P(x|z)`` at the guide's centre (the mean of a Gaussian guide).

        :param x: data, shape ``(batch, x_dim)``.
        :returns: reconstructions, shape ``(batch, x_dim)``.
        """
        z = self.guide_family.center(self.encoder, self.encoder(x))
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``z`` from the prior and return the mean of ``P(x|z)``: no encoder involved.

        :param int num_samples: how many samples.
        :param generator: optional :class:`torch.Generator` for reproducible draws.
        :returns: tensor of shape ``(num_samples, x_dim)``.
        """
        if not isinstance(self.prior_family, StandardNormal):  # draws from its own stream
            z = draw(self.prior(), num_samples, generator, self.prior_loc.device)
            return self.likelihood.mean(self.decoder(z))
        eps = torch.randn(
            num_samples,
            self.z_dim,
            generator=generator,
            device=self.prior_loc.device,
            dtype=self.prior_loc.dtype,
        )
        return self.likelihood.mean(self.decoder(self.prior_loc + self.prior_scale * eps))
