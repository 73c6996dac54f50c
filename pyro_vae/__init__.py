"""pyro_vae: variational autoencoders as Pyro model/guide pairs.

Doersch, *Tutorial on Variational Autoencoders* (arXiv:1606.05908), built on
Pyro: the model P(z)P(x|z) and the guide Q(z|x) are Pyro functions, trained
with SVI, with the likelihood P(x|z) a swappable value.
"""

__version__ = "0.1.0"

from pyro_vae.cvae import CVAE, Regressor
from pyro_vae.data import Dataset, binarize_batch, dequantize, load
from pyro_vae.engine import Engine, make_engine, make_objective, scale_latents
from pyro_vae.errors import TrainingDiverged, UsageError
from pyro_vae.evaluate import mean_elbo
from pyro_vae.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    Beta,
    ContinuousBernoulli,
    DiscretizedLogistic,
    Gaussian,
    Laplace,
    Likelihood,
    get_likelihood,
)
from pyro_vae.networks import MLP, GaussianEncoder
from pyro_vae.tasks import TASKS, conditional_data
from pyro_vae.train import History, TrainConfig, check_fit_inputs, fit
from pyro_vae.units import bits_per_dim
from pyro_vae.vae import VAE

__all__ = [
    "CVAE",
    "LIKELIHOODS",
    "MLP",
    "TASKS",
    "VAE",
    "Bernoulli",
    "Beta",
    "ContinuousBernoulli",
    "Dataset",
    "DiscretizedLogistic",
    "Engine",
    "Gaussian",
    "GaussianEncoder",
    "History",
    "Laplace",
    "Likelihood",
    "Regressor",
    "TrainConfig",
    "TrainingDiverged",
    "UsageError",
    "__version__",
    "binarize_batch",
    "bits_per_dim",
    "check_fit_inputs",
    "conditional_data",
    "dequantize",
    "fit",
    "get_likelihood",
    "load",
    "make_engine",
    "make_objective",
    "mean_elbo",
    "scale_latents",
]
