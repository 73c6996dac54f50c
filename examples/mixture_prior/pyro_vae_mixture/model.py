"""A VAE with a learned mixture-of-Gaussians prior, on pyro_vae's model contract.

Only the prior differs from :class:`pyro_vae.models.VAE`:
``P(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))`` with learned weights, means and
scales, registered with Pyro under ``MODEL.prior`` and trained with the rest by the ELBO.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models import VAE, Option
from pyro_vae.parsing import at_least

#: ``pyro-vae train --modes K``: the number of Gaussians in the prior
MODES = Option(
    "--modes", "Gaussians in the learned mixture prior", default=10, type=at_least(1, 1000)
)


class MoGVAE(VAE):
    """:class:`~pyro_vae.models.VAE` with the prior a learned mixture of ``modes``
    diagonal Gaussians; every other argument is the VAE's.

    :param int modes: the number of Gaussians.
    """

    kind = "mogvae"
    summary = "a VAE whose prior P(z) is a learned mixture of Gaussians"
    # the VAE's options, less those of its prior: this model's prior is its own
    options = (*(o for o in VAE.options if not o.flag.startswith("--prior")), MODES)

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood=None,
        image_shape: Sequence[int] | None = None,
        guide_family="diagonal",
        network: str = "mlp",
        modes: int = 10,
        name: str | None = None,
    ) -> None:
        super().__init__(
            x_dim, z_dim, hidden_dims, likelihood, image_shape, guide_family, network, name
        )
        self.modes = int(modes)
        self.prior_parameters = nn.ParameterDict(
            {
                "logits": nn.Parameter(torch.zeros(self.modes)),
                # spread the means so that the modes start apart
                "locs": nn.Parameter(torch.randn(self.modes, self.z_dim)),
                "log_scales": nn.Parameter(torch.zeros(self.modes, self.z_dim)),
            }
        )

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset) -> MoGVAE:
        """The model of ``pyro-vae train --model mogvae`` for ``dataset``."""
        vae = VAE.from_options(options, dataset)  # the likelihood and guide of the options
        return cls(
            dataset.x_dim,
            z_dim=options["z_dim"],
            hidden_dims=options["hidden_dims"],
            likelihood=vae.likelihood,
            image_shape=dataset.image_shape,
            guide_family=vae.guide_family,
            network=options.get("network", "mlp"),
            modes=options["modes"],
        )

    def prior(self) -> dist.MixtureSameFamily:
        """``P(z)``: the mixture, with event shape ``(z_dim,)``."""
        p = self.prior_parameters
        gaussians = dist.Normal(p["locs"], p["log_scales"].exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=p["logits"]), gaussians)

    def model(self, x: torch.Tensor) -> None:
        """``P(z) P(x|z)`` with the learned prior.

        :param x: observed data, shape ``(batch, x_dim)``.
        """
        self.pyro_module("decoder", self.decoder)
        self.pyro_module("prior", self.prior_parameters)
        self.pyro_likelihood()
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Means of ``P(x|z)`` for ``z`` drawn from the learned prior.

        :param int num_samples: how many.
        :param generator: a :class:`torch.Generator` for reproducible draws.
        """
        p = self.prior_parameters
        pick = torch.multinomial(p["logits"].softmax(-1), num_samples, True, generator=generator)
        eps = torch.randn(num_samples, self.z_dim, generator=generator, device=pick.device)
        z = p["locs"][pick] + p["log_scales"][pick].exp() * eps
        return self.likelihood.mean(self.decoder(z))
