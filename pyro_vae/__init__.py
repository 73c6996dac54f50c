"""pyro_vae: variational autoencoders as Pyro model/guide pairs.

Doersch, *Tutorial on Variational Autoencoders* (arXiv:1606.05908), built on
Pyro: the model P(z)P(x|z) and the guide Q(z|x) are Pyro functions, trained
with SVI, with the likelihood P(x|z) a swappable value.
"""

from pyro_vae.ais import (
    AISResult,
    BDMCResult,
    ais_dataset,
    annealed_importance_sampling,
    bdmc,
    bdmc_dataset,
)
from pyro_vae.cli import run_command
from pyro_vae.data import Dataset, binarize_batch, dequantize, load
from pyro_vae.engine import Engine, make_engine
from pyro_vae.errors import CommandFailed, TrainingDiverged, UsageError
from pyro_vae.evaluate import (
    DatasetEvaluation,
    IWAEBounds,
    LogLikelihood,
    evaluate_dataset,
    iwae_bounds,
    log_likelihood,
    mean_elbo,
)
from pyro_vae.gaps import GapDecomposition, decompose_gap
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
    register_likelihood,
)
from pyro_vae.models import CVAE, MODELS, VAE, Model, ModelData, Regressor, register
from pyro_vae.networks import MLP, GaussianEncoder
from pyro_vae.objectives import make_objective
from pyro_vae.run import DataConfig, RunConfig, RunFolder, open_run
from pyro_vae.tasks import TASKS, conditional_data
from pyro_vae.train import History, TrainConfig, fit
from pyro_vae.units import bits_per_dim
from pyro_vae.version import __version__

__all__ = [
    "CVAE",
    "LIKELIHOODS",
    "MLP",
    "MODELS",
    "TASKS",
    "VAE",
    "AISResult",
    "BDMCResult",
    "Bernoulli",
    "Beta",
    "CommandFailed",
    "ContinuousBernoulli",
    "DataConfig",
    "Dataset",
    "DatasetEvaluation",
    "DiscretizedLogistic",
    "Engine",
    "GapDecomposition",
    "Gaussian",
    "GaussianEncoder",
    "History",
    "IWAEBounds",
    "Laplace",
    "Likelihood",
    "LogLikelihood",
    "Model",
    "ModelData",
    "Regressor",
    "RunConfig",
    "RunFolder",
    "TrainConfig",
    "TrainingDiverged",
    "UsageError",
    "__version__",
    "ais_dataset",
    "annealed_importance_sampling",
    "bdmc",
    "bdmc_dataset",
    "binarize_batch",
    "bits_per_dim",
    "conditional_data",
    "decompose_gap",
    "dequantize",
    "evaluate_dataset",
    "fit",
    "get_likelihood",
    "iwae_bounds",
    "load",
    "log_likelihood",
    "make_engine",
    "make_objective",
    "mean_elbo",
    "open_run",
    "register",
    "register_likelihood",
    "run_command",
]
