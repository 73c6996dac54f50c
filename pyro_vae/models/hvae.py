"""A VAE with two stochastic layers (Burda, Grosse and Salakhutdinov 2016, section 5).

Model ``p(z2) p(z1|z2) p(x|z1)`` with ``z2 ~ N(0, I)`` (or a learned prior family,
:mod:`pyro_vae.priors`) and Gaussian ``p(z1|z2)``; guide
``q(z1|x) q(z2|z1)``. Every conditional is a diagonal Gaussian (or the likelihood, for
``x``) whose parameters come from an MLP with two tanh hidden layers, as in the paper:
by default latents of 100 and 50 dimensions, hidden widths 200 between ``x`` and
``z1`` and 100 between ``z1`` and ``z2`` (784-200-200-100-100-50). Both latent sites
sit in the ``"data"`` plate, so every Pyro objective, IWAE training with k particles
and the evaluator work unchanged.

References:

- Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.diagnostics import active_units, kl_term
from pyro_vae.errors import UsageError
from pyro_vae.guides import ReparameterizedNormal
from pyro_vae.likelihoods import Bernoulli, Likelihood
from pyro_vae.models.base import Model, Option
from pyro_vae.models.options import (
    LIKELIHOOD,
    NETWORK,
    PRIOR_OPTIONS,
    SIGMA,
    architecture,
    check_sizes,
    initialize_prior,
    likelihood_from_options,
    prior_family_from_options,
)
from pyro_vae.models.vae import VAE
from pyro_vae.networks import GaussianEncoder
from pyro_vae.parsing import positive_list
from pyro_vae.priors import PriorFamily, StandardNormal, draw, get_prior, learned

Z_DIMS = Option(
    "--z-dims",
    "sizes of the two latent layers z1,z2 of the two-layer model",
    default=[100, 50],
    type=positive_list,
)
LAYER_HIDDEN = Option(
    "--hidden-dims",
    "comma-separated hidden widths of every network",
    default=[200, 100],
    type=positive_list,
)


class HVAE(Model):
    """VAE with two stochastic layers: ``p(z2) p(z1|z2) p(x|z1)``, ``q(z1|x) q(z2|z1)``.

    :param int x_dim: data dimension.
    :param z_dims: ``(z1_dim, z2_dim)``.
    :param hidden_dims: ``(h1, h2)``: the networks between ``x`` and ``z1`` have two
        hidden layers of ``h1`` units, those between ``z1`` and ``z2`` two of ``h2``.
    :param likelihood: ``p(x|z1)``; Bernoulli by default.
    :param image_shape: ``(height, width)`` for pictures.
    :param str network: ``"mlp"`` (default) or ``"conv"``: the two networks that touch
        the images, ``q(z1|x)`` and ``p(x|z1)``, start (end) with two stride-2
        convolutions (:class:`~pyro_vae.networks.Convolutional`).
    :param str name: prefix in Pyro's param store; unique per instance by default.
    :param prior_family: a :class:`~pyro_vae.priors.PriorFamily` (or its name) for the
        top layer ``p(z2)``, ``N(0, I)`` by default. The VampPrior of this model is
        ``(1/K) sum_k q(z2 | mu1(u_k))``: the guide of z2 at the centre of ``q(z1|u_k)``
        for each pseudo-input ``u_k``, since the guide has no ``q(z2|x)`` of its own.
    """

    kind = "hvae"
    summary = "two stochastic layers p(z2)p(z1|z2)p(X|z1) (Burda et al. 2016)"
    options = (Z_DIMS, LAYER_HIDDEN, LIKELIHOOD, SIGMA, NETWORK, *PRIOR_OPTIONS)
    components: ClassVar[dict[str, Any]] = {
        key: VAE.components[key] for key in ("likelihood", "prior_family")
    }
    hints: ClassVar[dict[str, str]] = VAE.hints
    latent_sites = ("z1", "z2")

    def __init__(
        self,
        x_dim: int,
        z_dims: Sequence[int] = (100, 50),
        hidden_dims: Sequence[int] = (200, 100),
        likelihood: Likelihood | None = None,
        image_shape: Sequence[int] | None = None,
        network: str = "mlp",
        name: str | None = None,
        prior_family: PriorFamily | str = "standard",
    ) -> None:
        super().__init__(name)
        if len(z_dims) != 2 or len(hidden_dims) != 2:
            raise UsageError(
                f"the two-layer model takes two latent sizes and two hidden widths, got "
                f"{{z_dims}} {list(z_dims)} and {{hidden_dims}} {list(hidden_dims)} (such as "
                "100,50 and 200,100)",
                settings=("z_dims", "hidden_dims"),
            )
        check_sizes("HVAE", x_dim=x_dim, z_dims=list(z_dims), hidden_dims=list(hidden_dims))
        self.x_dim = int(x_dim)
        self.z_dims = tuple(int(d) for d in z_dims)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.x_dim)
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        (z1, z2), (h1, h2) = self.z_dims, self.hidden_dims

        def gaussian(inputs, width, outputs):
            return GaussianEncoder(inputs, (width, width), outputs, activation=nn.Tanh)

        self.network = network
        images = architecture(network, (h1, h1), self._image_shape, nn.Tanh)
        self.encoder1 = GaussianEncoder(self.x_dim, images, z1)  # q(z1|x)
        self.encoder2 = gaussian(z1, h2, z2)  # q(z2|z1)
        self.prior1 = gaussian(z2, h2, z1)  # p(z1|z2)
        self.decoder = images.decoder(z1, self.x_dim * self.likelihood.params_per_dim)  # p(x|z1)
        self.register_buffer("prior_loc", torch.zeros(z2))
        self.register_buffer("prior_scale", torch.ones(z2))
        self.prior_family = get_prior(prior_family)
        self.prior_family.setup(z2, self.x_dim)

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset) -> HVAE:
        """The two-layer model of ``pyro-vae train --model hvae`` for ``dataset``."""
        model = cls(
            dataset.x_dim,
            z_dims=options["z_dims"],
            hidden_dims=options["hidden_dims"],
            likelihood=likelihood_from_options(options, dataset),
            image_shape=dataset.image_shape,
            network=options.get("network", "mlp"),
            prior_family=prior_family_from_options(options),
        )
        initialize_prior(model.prior_family, dataset)
        return model

    @property
    def data_dims(self) -> tuple[int]:
        """``(x_dim,)``."""
        return (self.x_dim,)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the images, or ``None``."""
        return self._image_shape

    def describe(self) -> str:
        """``"HVAE (z 100-50)"``, or ``"HVAE (z 100-50), flow prior (steps=4, hidden=64)"``."""
        name = f"HVAE (z {self.z_dims[0]}-{self.z_dims[1]})"
        if isinstance(self.prior_family, StandardNormal):
            return name
        return f"{name}, {self.prior_family.describe()}"

    def model(self, x: torch.Tensor) -> None:
        """``z2 ~ p(z2)``, ``z1 | z2 ~ N(prior1(z2))``, ``x | z1 ~ likelihood(decoder(z1))``.

        :param x: observed data, ``(batch, x_dim)``.
        """
        self.pyro_module("prior1", self.prior1)
        self.pyro_module("decoder", self.decoder)
        self.pyro_likelihood()
        top = self.prior()
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", top)
            z1 = pyro.sample("z1", dist.Normal(*self.prior1(z2)).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    def prior(self) -> dist.TorchDistribution:
        """``p(z2)``, event shape ``(z2_dim,)``; a learned prior's parameters (and, for
        the VampPrior, both encoders) are registered with Pyro where it is called."""
        if isinstance(self.prior_family, StandardNormal):
            return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
        self.pyro_module("prior", self.prior_family)
        if self.prior_family.name == "vamp":
            self.pyro_module("encoder1", self.encoder1)
            self.pyro_module("encoder2", self.encoder2)
        return self.prior_family.distribution(self._encode)

    def _encode(self, u: torch.Tensor) -> dist.TorchDistribution:
        """``q(z2 | mu1(u))`` for a batch of inputs: the VampPrior's components."""
        loc1, _ = self.encoder1(u)
        return dist.Normal(*self.encoder2(loc1)).to_event(1)

    def guide(self, x: torch.Tensor) -> None:
        """``z1 ~ N(encoder1(x))``, then ``z2 ~ N(encoder2(z1))``.

        :param x: observed data, ``(batch, x_dim)``.
        """
        self.pyro_module("encoder1", self.encoder1)
        self.pyro_module("encoder2", self.encoder2)
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", ReparameterizedNormal(*self.encoder1(x)).to_event(1))
            pyro.sample("z2", ReparameterizedNormal(*self.encoder2(z1)).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral draws ``z2 ~ p(z2)``, ``z1 ~ p(z1|z2)``; the mean of ``p(x|z1)``.

        :returns: ``(num_samples, x_dim)``.
        """
        shape = (num_samples, self.z_dims[1])
        kw = dict(generator=generator, device=self.prior_loc.device, dtype=self.prior_loc.dtype)
        if isinstance(self.prior_family, StandardNormal):
            z2 = torch.randn(shape, **kw)
        else:
            z2 = draw(self.prior(), num_samples, generator, self.prior_loc.device)
        loc, scale = self.prior1(z2)
        z1 = loc + scale * torch.randn(loc.shape, **kw)
        return self.likelihood.mean(self.decoder(z1))

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor) -> dict[str, Any]:
        """On ``x``: the KL term of both layers ``E_Q[log q(z1,z2|X) - log p(z1,z2)]``
        (nats per point, 10 draws each), the active units of each layer (z2's at z1's
        centre), and for a mixture or VampPrior on z2 what its components explain."""
        kl, draws = kl_term(self.model, self.guide, x, ("z1", "z2"))
        loc1, _ = self.encoder1(x)
        loc2, _ = self.encoder2(loc1)
        units = [active_units(loc).count if len(x) > 1 else None for loc in (loc1, loc2)]
        return {
            "kl_term": kl,
            "active_units_z1": units[0],
            "active_units_z2": units[1],
            **learned(self.prior(), draws["z2"]),
        }

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z1)`` at the mean of ``q(z1|x)``."""
        loc, _ = self.encoder1(x)
        return self.likelihood.mean(self.decoder(loc))
