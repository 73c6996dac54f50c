"""``pyro-vae train`` options that several models share, and the likelihood they build.

A model lists the options it takes in :attr:`pyro_vae.models.base.Model.options`; the
command line offers the union over the registry and refuses an option that the chosen
model does not list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from pyro_vae.errors import UsageError
from pyro_vae.guides import GUIDES, IAF, GuideFamily, get_guide_family
from pyro_vae.likelihoods import LIKELIHOODS, SCALE_MODES, Likelihood, get_likelihood
from pyro_vae.limits import MAX_FLOW_STEPS, MAX_SIGMA, MAX_WIDTH, MIN_SIGMA
from pyro_vae.models.base import Option
from pyro_vae.networks import NETWORKS, Architecture, Convolutional
from pyro_vae.parsing import at_least, between, number_or, positive_list, size
from pyro_vae.priors import PRIORS, FlowPrior, MixturePrior, PriorFamily, VampPrior, get_prior

if TYPE_CHECKING:
    from pyro_vae.data import Dataset

#: the constructor argument that ``--sigma`` sets, per likelihood that has a scale
SCALE_ARGUMENT = {"gaussian": "sigma", "laplace": "scale"}
#: the scale when ``--sigma`` is not given
DEFAULT_SIGMA = 0.1


#: the type of ``--sigma``: a number in ``[MIN_SIGMA, MAX_SIGMA]``, or a learned-scale mode
scale_value = number_or(SCALE_MODES, between(MIN_SIGMA, MAX_SIGMA))


def _stored_scale(config: dict[str, Any]) -> Any:
    likelihood = config["likelihood"]
    return likelihood.get(SCALE_ARGUMENT.get(likelihood["name"], ""))


Z_DIM = Option("--z-dim", "latent dimension", default=20, type=size)
HIDDEN_DIMS = Option(
    "--hidden-dims",
    "comma-separated hidden widths of every network",
    default=[400],
    type=positive_list,
)


class RegistryNames(Sequence):
    """The sorted names of a registry, read when asked: the choices of an option that
    grow when a plugin registers more (:mod:`pyro_vae.plugins`)."""

    def __init__(self, registry: dict[str, Any]) -> None:
        self.registry = registry

    def __getitem__(self, index):
        return sorted(self.registry)[index]

    def __len__(self) -> int:
        return len(self.registry)

    def __contains__(self, name: object) -> bool:
        return name in self.registry

    def __repr__(self) -> str:
        return f"RegistryNames({sorted(self.registry)})"


LIKELIHOOD = Option(
    "--likelihood",
    "P(x|z), or P(Y|z,X)",
    default="bernoulli",
    choices=RegistryNames(LIKELIHOODS),
    stored=lambda config: config["likelihood"]["name"],
)
SIGMA = Option(
    "--sigma",
    "scale of the gaussian (sigma) or laplace likelihood: a number (fixed), or shared, "
    f"per-pixel or predicted (learned) (default {DEFAULT_SIGMA}; 1 for vqvae, the notes' "
    "unit variance)",
    type=scale_value,
    stored=_stored_scale,
)
#: the options of every model with a likelihood and MLP networks
NETWORK_OPTIONS = (HIDDEN_DIMS, LIKELIHOOD, SIGMA)
NETWORK = Option(
    "--network",
    "the networks between the images and the latents: mlp (fully connected), or conv "
    "(two stride-2 convolutions, then the hidden widths; the decoder mirrors them)",
    default="mlp",
    choices=NETWORKS,
)


def architecture(
    network: str,
    hidden_dims: Sequence[int],
    image_shape: Sequence[int] | None,
    activation: type[nn.Module] = nn.ReLU,
) -> Architecture:
    """The :class:`~pyro_vae.networks.Architecture` that ``--network`` asks for: the
    encoder and decoder networks of a model that lists :data:`NETWORK` (the built-in
    models call it in their constructors, with the ``network`` and ``hidden_dims``
    arguments they store, so that ``config()`` rebuilds the same networks).

    :param str network: ``"mlp"`` or ``"conv"``.
    :param hidden_dims: the hidden widths (``--hidden-dims``).
    :param image_shape: ``(height, width)`` of the data's images; ``None`` for data that
        are not images.
    :param activation: the nonlinearity between layers.
    :raises UsageError: an unknown name, or ``conv`` for data that are not images.
    """
    if network == "mlp":
        return Architecture(hidden_dims, activation)
    if network != "conv":
        raise UsageError(
            f"unknown {{network}} {network!r}; valid: {', '.join(NETWORKS)}",
            settings=("network",),
        )
    if image_shape is None:
        raise UsageError(
            "{network} conv needs images, and these data have no image shape (an npz "
            "data set is an image only if its width is a square number, like 64 or 784). "
            "Use {network} mlp",
            settings=("network",),
        )
    return Convolutional(hidden_dims, image_shape, activation)


def _stored_family(config: dict[str, Any], key: str, default: str) -> dict[str, Any]:
    """A family's stored configuration (``guide_family``, ``prior_family``) as a dict:
    runs stored the default by its name alone, or nothing at all."""
    stored = config.get(key, default)
    return {"name": stored} if isinstance(stored, str) else stored


def _stored_guide(config: dict[str, Any]) -> dict[str, Any]:
    return _stored_family(config, "guide_family", "diagonal")


GUIDE = Option(
    "--guide",
    "the family of Q(z|X): diagonal Gaussian, full-covariance Gaussian, or a diagonal "
    "Gaussian followed by an inverse autoregressive flow (iaf)",
    default="diagonal",
    choices=tuple(GUIDES),
    stored=lambda config: _stored_guide(config)["name"],
)
FLOW_STEPS = Option(
    "--flow-steps",
    f"steps T of the inverse autoregressive flow, with --guide iaf (default {IAF().flow_steps})",
    type=at_least(1, MAX_FLOW_STEPS),
    stored=lambda config: _stored_guide(config).get("flow_steps"),
)
#: the options of a model whose guide family is a choice
GUIDE_OPTIONS = (GUIDE, FLOW_STEPS)

#: ``--prior``: the prior families (:mod:`pyro_vae.priors`), and the conditional VAE's
#: two (``fixed``, its name for N(0, I), and ``learned``, a network P(z|X)); one flag
#: parses alike for every model, and each model refuses the names it does not take
PRIOR_CHOICES = (*PRIORS, "fixed", "learned")


def _stored_prior(config: dict[str, Any]) -> dict[str, Any]:
    return _stored_family(config, "prior_family", "standard")


PRIOR = Option(
    "--prior",
    "P(z): standard N(0, I); mixture, a learned mixture of Gaussians; vamp, the "
    "VampPrior (the guide at learned pseudo-inputs); flow, N(0, I) through learned "
    "affine couplings. The cvae takes fixed (N(0, I)) or learned (a network P(z|X))",
    default="standard",
    choices=PRIOR_CHOICES,
    stored=lambda config: _stored_prior(config)["name"],
)
PRIOR_COMPONENTS = Option(
    "--prior-components",
    "Gaussians of --prior mixture, pseudo-inputs of --prior vamp (default "
    f"{MixturePrior().components} and {VampPrior().components})",
    type=at_least(1, MAX_WIDTH),
    stored=lambda config: _stored_prior(config).get("components"),
)
PRIOR_FLOW_STEPS = Option(
    "--prior-flow-steps",
    f"affine coupling layers of --prior flow (default {FlowPrior().steps})",
    type=at_least(1, MAX_FLOW_STEPS),
    stored=lambda config: _stored_prior(config).get("steps"),
)
PRIOR_INIT = Option(
    "--prior-init",
    "pseudo-inputs of --prior vamp: random (uniform in [0, 1], the paper's default) or "
    "data (training points)",
    choices=VampPrior.INITS,
    stored=lambda config: _stored_prior(config).get("init"),
)
#: the options of a model whose prior family is a choice
PRIOR_OPTIONS = (PRIOR, PRIOR_COMPONENTS, PRIOR_FLOW_STEPS, PRIOR_INIT)


def prior_family_from_options(options: dict[str, Any]) -> PriorFamily:
    """The prior family that ``--prior`` and its settings ask for.

    :raises UsageError: a setting of another family (``--prior-components`` without
        ``mixture`` or ``vamp``, ``--prior-flow-steps`` without ``flow``,
        ``--prior-init`` without ``vamp``), or the conditional VAE's ``learned``.
    """
    name = options.get("prior") or "standard"
    name = "standard" if name == "fixed" else name
    if name == "learned":
        raise UsageError(
            "{prior} learned is the conditional prior network P(z|X) of {model} cvae; "
            "learned priors of this model are mixture, vamp and flow",
            settings=("prior", "model"),
        )
    takes = {
        "prior_components": ("mixture", "vamp"),
        "prior_flow_steps": ("flow",),
        "prior_init": ("vamp",),
    }
    for setting, families in takes.items():
        if options.get(setting) is not None and name not in families:
            raise UsageError(
                f"{{{setting}}} sets {{prior}} {' or '.join(families)}, not {name}; drop "
                f"{{{setting}}} or choose {{prior}} {families[0]}",
                settings=(setting, "prior"),
            )
    settings = {
        "components": options.get("prior_components"),
        "steps": options.get("prior_flow_steps"),
        "init": options.get("prior_init"),
    }
    return get_prior(name, **{k: v for k, v in settings.items() if v is not None})


def initialize_prior(prior: PriorFamily, dataset: Dataset) -> None:
    """Set what a prior family takes from the training data before training: the
    pseudo-inputs of ``--prior vamp --prior-init data``; nothing for the others."""
    if isinstance(prior, VampPrior) and prior.init == "data":
        prior.initialize(dataset.x_train.cpu())


def guide_family_from_options(options: dict[str, Any]) -> GuideFamily:
    """The guide family that ``--guide`` and ``--flow-steps`` ask for, for a
    ``from_options`` whose model lists :data:`GUIDE_OPTIONS` (a diagonal Gaussian where
    it lists neither).

    :param dict options: the options ``from_options`` is given.
    :raises UsageError: ``--flow-steps`` with a family that has no flow.
    """
    name, steps = options.get("guide", "diagonal"), options.get("flow_steps")
    if name == IAF.name:
        return IAF() if steps is None else IAF(steps)
    if steps is not None:
        raise UsageError(
            f"{{flow_steps}} sets the flow of {{guide}} iaf; the {name} guide has none. "
            "Drop {flow_steps}, or choose {guide} iaf",
            settings=("flow_steps", "guide"),
        )
    return get_guide_family(name)


def likelihood_from_options(
    options: dict[str, Any], dataset: Dataset, default_sigma: float = DEFAULT_SIGMA
) -> Likelihood:
    """The likelihood that ``--likelihood`` and ``--sigma`` ask for, fitted to ``dataset``,
    for a ``from_options`` whose model lists :data:`LIKELIHOOD` and :data:`SIGMA` (both in
    :data:`NETWORK_OPTIONS`).

    :param dict options: the options ``from_options`` is given.
    :param dataset: the data set the model is built for (a discretized logistic reads
        its number of grey levels).
    :param float default_sigma: the scale when ``--sigma`` is not given.
    :raises UsageError: ``--sigma`` for a likelihood without a scale, or a discretized
        logistic on data whose grey levels are unknown.
    """
    name, sigma = options["likelihood"], options.get("sigma")
    if name in SCALE_ARGUMENT:
        return get_likelihood(
            name, **{SCALE_ARGUMENT[name]: default_sigma if sigma is None else sigma}
        )
    if sigma is not None:
        raise UsageError(
            f"{{sigma}} sets the scale of the {' and '.join(SCALE_ARGUMENT)} likelihoods; the "
            f"{name} likelihood has none. Drop {{sigma}}, or choose {{likelihood}} gaussian",
            settings=("sigma", "likelihood"),
        )
    if name == "discretized-logistic":
        if dataset.levels is None:
            raise UsageError(
                f"the discretized-logistic likelihood needs the data's number of grey levels, "
                f"which {dataset.name} does not record; store pixels as 8-bit integers"
            )
        return get_likelihood(name, levels=dataset.levels)
    return get_likelihood(name)


#: the sizes a model takes from its data: they have no upper bound of their own
DATA_SIZES = ("x_dim", "y_dim")


def check_sizes(owner: str, **sizes: int | Sequence[int]) -> None:
    """:raises UsageError: if any size (or any entry of a sequence of sizes) is below 1,
    or one of the model's own (all but :data:`DATA_SIZES`) is above
    :data:`~pyro_vae.limits.MAX_WIDTH`."""
    small, large = [], []
    for key, value in sizes.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        small += [f"{key}={v}" for v in values if int(v) < 1]
        if key not in DATA_SIZES:
            large += [f"{key}={v}" for v in values if int(v) > MAX_WIDTH]
    if small:
        raise UsageError(f"{owner} sizes must be at least 1, got {', '.join(small)}")
    if large:
        raise UsageError(
            f"{owner} sizes must be at most {MAX_WIDTH} (2**20: a layer between two such "
            f"widths holds 2**40 weights, 4 TiB), got {', '.join(large)}; use smaller sizes"
        )
