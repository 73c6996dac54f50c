"""A model and a likelihood for pyro_vae written outside it: a VAE whose prior P(z) is
a learned mixture of Gaussians (:class:`~pyro_vae_mixture.model.MoGVAE`), and Student's
t for P(x|z) (:class:`~pyro_vae_mixture.likelihood.StudentT`)."""

from pyro_vae_mixture.likelihood import StudentT
from pyro_vae_mixture.model import MoGVAE

__all__ = ["MoGVAE", "StudentT"]
