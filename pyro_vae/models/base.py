"""The model contract: everything a model of pyro_vae provides, in one place.

A model is a :class:`torch.nn.Module` whose :meth:`Model.model` and :meth:`Model.guide`
are Pyro functions of the data tensors, with the data points indexed by
``pyro.plate("data", N, dim=-1)``. Training (:func:`pyro_vae.fit`), evaluation
(:mod:`pyro_vae.evaluate`), the run folder (:mod:`pyro_vae.run`), the figures
(:mod:`pyro_vae.plots`) and every command of ``pyro-vae`` work through this class and
never ask which model they hold: they ask what it can do (:meth:`Model.supports`).
Models return tensors; they draw no pictures.

**Required** (abstract, or checked when the class is registered or built):

==========================  ==========================================================
``kind``                    registry name, stored as ``config()["kind"]``
``model``, ``guide``        the Pyro model and guide, functions of the data tensors
``data_dims``               widths of the data tensors; the last one is the target
``from_options``            build an untrained model from ``pyro-vae train`` options
``likelihood``              the target's likelihood, set by the constructor
==========================  ==========================================================

**Declared** (class attributes with defaults):

==========================  ==========================================================
``summary``, ``options``    ``--help`` line, and the train options it takes (:class:`Option`)
``notation``                how reports name P(X), Q(z|X), the prior and the posterior
``target``                  the observed site that evaluation scores (``"x"``)
``latent_sites``            its latent sample sites; ``()`` for a model without any
``max_plate_nesting``       plates the model nests (for vectorized particles)
``enumerated_sites``        guide sites summed out by enumeration (``TraceEnum_ELBO``)
``sample_columns``          width of a grid of samples (``None``: square)
``components``              constructor arguments stored by their own ``config()``
``hints``                   what to use instead, per capability it lacks
``proposal_note``           what reports say about ``proposal`` where it is not the guide
==========================  ==========================================================

**Provided** (override where the default does not fit):

==========================  ==========================================================
``supports``                whether it has a capability (:data:`CAPABILITIES`)
``sample``                  draws from the prior, as means of the target's likelihood
``reconstruct``             the likelihood's mean at the guide's centre
``completions``             targets drawn for conditions of a split (:class:`Completions`)
``exact_log_likelihood``    ``log P`` per point, where it has a closed form
``guide_parts``             the guide family and encoder of ``"z"`` (gap decomposition)
``unsupported``             the error for a capability it lacks
``describe``, ``image_shape``  its name in reports; ``(height, width)`` of image targets
``check_data``              shapes and the likelihood's support, before training
``training_data``           the tensors and per-batch transforms of a data set
``evaluation_data``         the fixed tensors a split is scored on
``config``, ``from_config``  constructor arguments as plain data, and back
``proposal``                what the evaluator samples the latents from (the guide)
``diagnostics``             model-specific numbers for the run's results
``empty_share``             a data-parallel step on a rank with no points
``pyro_module``, ``pyro_likelihood``  register networks in Pyro's param store
``outside_param_store``     a context in which nothing is registered
==========================  ==========================================================

A capability is implemented by overriding its method (``gap_decomposition`` by
``guide_parts``), except ``latent``, which a model has when ``latent_sites`` is not
empty. Networks are registered under the model's unique name in Pyro's global param
store (names and their release are in :mod:`pyro_vae.models.params`); the config round
trip is in :mod:`pyro_vae.models.config`.
"""

from __future__ import annotations

import abc
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyro
import torch
from torch import nn

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import Likelihood, get_likelihood
from pyro_vae.models.config import accepted_arguments, plain, record_arguments
from pyro_vae.models.params import claim_name, name_taken, release
from pyro_vae.models.records import Completions, ModelData, Notation

if TYPE_CHECKING:
    from pyro_vae.data import Dataset
    from pyro_vae.guides import GuideFamily

#: what :meth:`Model.supports` answers, with the method that implements each (``latent``:
#: a non-empty :attr:`Model.latent_sites`)
CAPABILITIES: dict[str, str | None] = {
    "sample": "sample",
    "reconstruct": "reconstruct",
    "completions": "completions",
    "exact_log_likelihood": "exact_log_likelihood",
    "gap_decomposition": "guide_parts",
    "latent": None,
}


@dataclass(frozen=True)
class Option:
    """A ``pyro-vae train`` option that a model class takes.

    :ivar flag: ``"--z-dim"``; its ``dest`` (``z_dim``) names the value in the options.
    :ivar help: help text; ``--help`` adds the default.
    :ivar default: value when the option is not given (``None``: the help says what
        happens then).
    :ivar type: argparse ``type`` (see :mod:`pyro_vae.parsing`).
    :ivar choices: argparse ``choices``.
    :ivar required: the model cannot be built without it.
    :ivar argument: the constructor argument (config entry) that takes the value, where
        it is not named ``dest`` (``--vq-codes`` sets ``codes``).
    :ivar stored: reads the value, as ``type`` parses it, back from a model's
        ``config()`` where no entry holds it (``--guide``); ``--resume`` compares them.
    """

    flag: str
    help: str
    default: Any = None
    type: Callable | None = None
    choices: tuple | None = None
    required: bool = False
    argument: str | None = None
    stored: Callable[[dict[str, Any]], Any] | None = None

    @property
    def dest(self) -> str:
        """The option's name in the parsed options: ``--z-dim`` -> ``z_dim``."""
        return self.flag.lstrip("-").replace("-", "_")

    def same_flag(self, other: Option) -> bool:
        """Whether ``other`` parses like this option, so that two models can share the
        flag (their help texts and defaults may differ)."""
        return (self.flag, self.type, self.choices) == (other.flag, other.type, other.choices)

    def value_in(self, config: dict[str, Any]) -> Any:
        """The value this option had when a model with ``config`` was built."""
        if self.stored is not None:
            return self.stored(config)
        return config.get(self.argument or self.dest, self.default)


class Model(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every model: see the module docstring for the contract.

    :param str name: prefix of the model's entries in Pyro's param store; unique per
        live instance by default. Two live models cannot share a name.
    """

    kind: ClassVar[str]
    summary: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    notation: ClassVar[Notation] = Notation()
    target: ClassVar[str] = "x"
    latent_sites: ClassVar[tuple[str, ...]] = ("z",)
    max_plate_nesting: ClassVar[int] = 1
    #: discrete guide sites marked for parallel enumeration: with any, ``--objective elbo``
    #: is ``TraceEnum_ELBO`` (the sum over their values is exact) and the others refuse
    enumerated_sites: ClassVar[tuple[str, ...]] = ()
    #: how many samples a row of a sample grid shows (a model that draws each class in
    #: one style sets its number of classes); ``None`` for a square grid
    sample_columns: int | None = None
    #: constructor arguments rebuilt from their config by a factory (a likelihood is
    #: stored as ``likelihood.config()``); each is kept as an attribute of that name
    components: ClassVar[dict[str, Callable[..., Any]]] = {
        "likelihood": lambda config: get_likelihood(**config)
    }
    hints: ClassVar[dict[str, str]] = {}
    proposal_note: ClassVar[str | None] = None

    likelihood: Likelihood

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # config() and from_config() round-trip every subclass without code of its own
        super().__init_subclass__(**kwargs)
        record_arguments(cls, stop=Model)

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        # a subclass without an __init__ of its own takes no arguments to record
        self.__dict__.setdefault("_arguments", {})
        self._claim(name)

    def _constructed(self) -> None:
        """Called once the outermost constructor has returned: checks what it must set."""
        if not isinstance(getattr(self, "likelihood", None), Likelihood):
            raise TypeError(
                f"{type(self).__name__}.__init__ sets no likelihood: set self.likelihood to "
                "a pyro_vae.likelihoods.Likelihood for the target (check_data, the reports "
                "and pyro-vae train read it)"
            )

    def _claim(self, name: str | None) -> None:
        self.name = claim_name(self, name)
        self._pyro_names: set[str] = set()
        finalizer = weakref.finalize(self, release, self._pyro_names)
        finalizer.atexit = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy.deepcopy and unpickling build a model without __init__: the copy claims a
        # name of its own (its original's, if that one is free), so that it never trains
        # another live model's parameters in Pyro's param store
        super().__setstate__(state)
        name = state.get("name")
        self._claim(name if isinstance(name, str) and not name_taken(name) else None)

    # -- required ---------------------------------------------------------------------

    @abc.abstractmethod
    def model(self, *data: torch.Tensor) -> Any:
        """The generative model, a Pyro function of the data tensors."""

    @abc.abstractmethod
    def guide(self, *data: torch.Tensor) -> Any:
        """The guide, a Pyro function with the model's signature."""

    @property
    @abc.abstractmethod
    def data_dims(self) -> tuple[int, ...]:
        """Widths of the data tensors ``model`` takes; the last one is the target."""

    @classmethod
    @abc.abstractmethod
    def from_options(cls, options: dict[str, Any], dataset: Dataset) -> Model:
        """Build an untrained model from ``pyro-vae train`` options for ``dataset``.

        :param dict options: the value of every :attr:`options` entry (defaults filled in).
        """

    # -- capabilities -----------------------------------------------------------------

    @classmethod
    def supports(cls, capability: str) -> bool:
        """Whether this model has ``capability``, one of :data:`CAPABILITIES`."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {tuple(CAPABILITIES)}")
        method = CAPABILITIES[capability]
        if method is None:
            return bool(cls.latent_sites)
        return getattr(cls, method) is not getattr(Model, method)

    def unsupported(self, capability: str) -> UsageError:
        """The error for a capability (:data:`CAPABILITIES`) this model lacks, with the
        class's hint."""
        hint = self.hints.get(capability, "")
        return UsageError(
            f"this {self.describe()} cannot {_CANNOT[capability]}" + (f"; {hint}" if hint else "")
        )

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num_samples`` draws from the model's prior, as means of the target's likelihood.

        :returns: ``(num_samples, data_dims[-1])``.
        """
        raise self.unsupported("sample")

    def reconstruct(self, *data: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at the guide's centre: reconstructions of the target."""
        raise self.unsupported("reconstruct")

    def completions(
        self, dataset: Dataset, split: str, num_inputs: int, num_samples: int, seed: int
    ) -> Completions:
        """Targets drawn given ``num_inputs`` evenly spaced conditions of ``split``, from
        random streams seeded with ``seed`` (the caller's are left as they were)."""
        raise self.unsupported("completions")

    def exact_log_likelihood(self, *data: torch.Tensor) -> torch.Tensor:
        """``log P`` of the target per data point, ``(N,)``, where it has a closed form
        (or a sum small enough to do). A model whose instances differ in this raises
        :class:`~pyro_vae.errors.UsageError` for those that cannot."""
        raise self.unsupported("exact_log_likelihood")

    def guide_parts(self) -> tuple[GuideFamily, nn.Module]:
        """``(family, encoder)`` of the one latent site ``"z"``: ``Q(z|X)`` is
        ``family.distribution(encoder, encoder(X))``. :func:`pyro_vae.gaps.decompose_gap`
        refines the family's parameters per point."""
        raise self.unsupported("gap_decomposition")

    # -- what reports show ------------------------------------------------------------

    def describe(self) -> str:
        """How reports name this model (``"VAE"``, ``"CVAE on task label"``)."""
        return type(self).__name__

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the target when it is an image, else ``None``."""
        return None

    def diagnostics(self, *data: torch.Tensor) -> dict[str, Any]:
        """Plain-data numbers that describe the trained model on ``data`` (the test
        split), for the run's ``results.json``; scalars are also shown in
        ``results.md`` as ``name: value``. None by default."""
        return {}

    # -- data -------------------------------------------------------------------------

    def check_data(self, *data: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyro_vae.errors.UsageError` if ``data`` do not fit the model:
        a tensor of the wrong shape, or a target outside the likelihood's support."""
        dims = self.data_dims
        if len(data) != len(dims):
            raise UsageError(f"{what}: this model takes {len(dims)} tensor(s), got {len(data)}")
        for t, width in zip(data, dims, strict=True):
            if t.ndim != 2 or t.shape[1] != width or t.shape[0] != data[0].shape[0]:
                shapes = ", ".join(str(tuple(d.shape)) for d in data)
                expected = ", ".join(f"(N, {w})" for w in dims)
                raise UsageError(f"{what} has shapes {shapes}, but this model expects {expected}")
        self.likelihood.check_data(data[-1], what)

    def training_data(self, dataset: Dataset) -> ModelData:
        """The tensors this model trains and is tested on, made from ``dataset``.

        The default serves a model of the images alone: ``(x,)``, with the data set's
        per-batch transform (dynamic binarization or dequantization).
        """
        from pyro_vae.splits import batch_transform

        return ModelData((dataset.x_train,), (dataset.x_test,), (batch_transform(dataset),))

    def evaluation_data(self, dataset: Dataset, split: str) -> tuple[torch.Tensor, ...]:
        """The fixed tensors the ``split`` (``"test"`` or ``"train"``) is scored on."""
        from pyro_vae.splits import evaluation_split

        return (evaluation_split(dataset, split),)

    # -- plain-data configuration -----------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain data: :meth:`from_config` rebuilds the model."""
        out: dict[str, Any] = {"kind": self.kind}
        for key, value in self.__dict__["_arguments"].items():
            if key in self.components:
                value = getattr(self, key).config()
            out[key] = plain(value, f"{type(self).__name__}({key}=...)")
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """Build an untrained model from :meth:`config` output.

        :raises UsageError: for settings the constructor does not take.
        """
        config = dict(config)
        config.pop("kind", None)
        unknown = sorted(set(config) - accepted_arguments(cls))
        if unknown:
            raise UsageError(
                f"the {cls.kind} configuration has settings this version of pyro_vae does "
                f"not know ({', '.join(unknown)}); upgrade pyro_vae"
            )
        for key, build in cls.components.items():
            if isinstance(config.get(key), dict):
                config[key] = build(config[key])
        return cls(**config)

    # -- Pyro -------------------------------------------------------------------------

    def proposal(self, *data: torch.Tensor) -> Any:
        """The Pyro guide that the evaluator draws the latents from to importance-sample
        ``log P``: the guide itself, unless the guide cannot serve (a guide that puts all
        its mass on one point makes every importance weight equal); then a proposal with
        full support, described by :attr:`proposal_note`."""
        return self.guide(*data)

    def empty_share(self) -> None:
        """Called by a data-parallel training step, in place of :meth:`model` and
        :meth:`guide`, on a rank whose share of a short last batch is empty. A model
        whose guide joins collectives while training (the VQ-VAE's moving averages sum
        their statistics across ranks) joins them here with empty statistics, so that
        every rank calls the same collectives in the same order. Nothing by default."""

    #: whether :meth:`pyro_module` registers networks (see :meth:`outside_param_store`)
    _registering: bool = True

    @contextlib.contextmanager
    def outside_param_store(self):
        """Within this context :meth:`pyro_module` registers nothing.

        For a training step whose optimizer holds ``self.parameters()`` itself (the
        ``fast`` engine of :func:`pyro_vae.make_engine`): nothing reads the param
        store there, and :func:`pyro.module` would look every parameter up in it on
        every call of ``model`` and ``guide``, about a tenth of a millisecond per
        network. Sample sites, and so every number, are the same.
        """
        before, self._registering = self._registering, False
        try:
            yield self
        finally:
            self._registering = before

    def pyro_module(self, part: str, module: nn.Module) -> None:
        """Register ``module`` with :func:`pyro.module` as ``NAME_PART``; the entries
        leave the param store when this model is garbage-collected. Nothing happens
        inside :meth:`outside_param_store`."""
        if not self._registering:
            return
        name = f"{self.name}_{part}"
        self._pyro_names.add(name)
        pyro.module(name, module)

    def pyro_likelihood(self) -> None:
        """Register the likelihood's learnable parameters (a learned sigma), if any."""
        if self._registering and any(p.requires_grad for p in self.likelihood.parameters()):
            self.pyro_module("likelihood", self.likelihood)


_CANNOT = {
    "sample": "draw samples from a prior",
    "reconstruct": "reconstruct its input",
    "completions": "complete a condition",
    "exact_log_likelihood": "compute its log-likelihood in closed form",
    "gap_decomposition": "have its guide refined per point (it has no guide family "
    'of one latent site "z")',
    "latent": "sample latent variables (it has none)",
}
