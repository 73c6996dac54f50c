"""The VAE of Doersch (2016), section 2, as a Pyro model and guide.

Model ``P(z) P(x|z)``: ``z ~ N(0, I)`` and ``x | z ~ likelihood(decoder(z))``.
Guide ``Q(z|x) = N(loc(x), diag(scale(x)^2))``. Both share the signature
``(x)`` and the site names ``"data"`` (plate, dim -1), ``"z"`` and ``"x"``, so
any Pyro objective or handler can consume them.
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

# Each instance registers its networks under its own name in Pyro's global param
# store; two instances sharing a name would share (or silently stop training)
# parameters there.
_instance_ids = itertools.count()


class VAE(nn.Module):
    """Variational autoencoder with MLP encoder and decoder.

    :param int x_dim: data dimension (pixels per image, flattened).
    :param int z_dim: latent dimension.
    :param hidden_dims: encoder hidden widths; the decoder mirrors them.
    :param likelihood: a :class:`~pyro_vae.likelihoods.Likelihood` for ``P(x|z)``;
        :class:`~pyro_vae.likelihoods.Bernoulli` by default.
    :param image_shape: ``(height, width)`` for pictures; ``None`` for non-image data.
    :param str name: prefix in Pyro's param store; unique per instance by default.

    Example::

        vae = VAE(784, z_dim=20, likelihood=Gaussian(sigma=0.1))
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        svi.step(x)  # x: (batch, 784)
    """

    #: plates the model nests (``"data"``); objectives with vectorized particles need it
    max_plate_nesting = 1

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: Likelihood | None = None,
        image_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        dims = {
            "x_dim": x_dim,
            "z_dim": z_dim,
            **{f"hidden_dims[{i}]": h for i, h in enumerate(hidden_dims)},
        }
        bad = [f"{k}={v}" for k, v in dims.items() if int(v) < 1]
        if bad:
            raise UsageError(f"VAE sizes must be at least 1, got {', '.join(bad)}")
        self.x_dim = int(x_dim)
        self.z_dim = int(z_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.setup(self.x_dim)  # per-pixel parameters need the data dimension
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.name = name if name is not None else f"vae{next(_instance_ids)}"
        self.encoder = GaussianEncoder(self.x_dim, self.hidden_dims, self.z_dim)
        self.decoder = MLP(
            self.z_dim,
            self.hidden_dims[::-1],
            self.x_dim * self.likelihood.params_per_dim,
        )
        # prior parameters as buffers: they follow .to(device) and are not trained
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    def model(self, x: torch.Tensor) -> None:
        """Generative model ``P(z) P(x|z)``.

        :param x: observed data, shape ``(batch, x_dim)``.
        """
        pyro.module(f"{self.name}_decoder", self.decoder)
        if any(p.requires_grad for p in self.likelihood.parameters()):
            pyro.module(f"{self.name}_likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
            z = pyro.sample("z", prior)  # (batch, z_dim), or (particles, batch, z_dim)
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Recognition model ``Q(z|x)``, a diagonal Gaussian.

        :param x: observed data, shape ``(batch, x_dim)``.
        """
        pyro.module(f"{self.name}_encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.encoder(x)  # (batch, z_dim) each
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyro_vae.errors.UsageError` if ``x`` does not fit the model:
        wrong width, or values outside the likelihood's support.

        :param x: data, shape ``(N, x_dim)``.
        :param str what: how to name the data in the message.
        """
        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise UsageError(
                f"{what} has shape {tuple(x.shape)}, but this model expects (N, {self.x_dim})"
            )
        self.likelihood.check_data(x, what)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``P(x|z)`` at the posterior mean ``z = loc(x)``.

        :param x: data, shape ``(batch, x_dim)``.
        :returns: reconstructions, shape ``(batch, x_dim)``.
        """
        loc, _ = self.encoder(x)
        return self.likelihood.mean(self.decoder(loc))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``z`` from the prior and return the mean of ``P(x|z)``: no encoder involved.

        :param int num_samples: how many samples.
        :param generator: optional :class:`torch.Generator` for reproducible draws.
        :returns: tensor of shape ``(num_samples, x_dim)``.
        """
        eps = torch.randn(
            num_samples,
            self.z_dim,
            generator=generator,
            device=self.prior_loc.device,
            dtype=self.prior_loc.dtype,
        )
        return self.likelihood.mean(self.decoder(self.prior_loc + self.prior_scale * eps))

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain data: :meth:`from_config` rebuilds the architecture."""
        return {
            "kind": "vae",
            "x_dim": self.x_dim,
            "z_dim": self.z_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood.config(),
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        """Build an untrained VAE from :meth:`config` output.

        :param dict config: as returned by :meth:`config`.
        """
        config = dict(config)
        config.pop("kind", None)  # absent from runs of pyro_vae 0.1
        likelihood = get_likelihood(**config.pop("likelihood"))
        return cls(likelihood=likelihood, **config)
