"""A model for pyro_vae written outside it: a VAE whose prior P(z) is a learned mixture
of Gaussians (:class:`~pyro_vae_mixture.model.MoGVAE`)."""

from pyro_vae_mixture.model import MoGVAE

__all__ = ["MoGVAE"]
