"""The model contract: everything a model of pyro_vae provides, in one place.

A model is a :class:`torch.nn.Module` whose :meth:`Model.model` and :meth:`Model.guide`
are Pyro functions of the data tensors, with the data points indexed by
``pyro.plate("data", N, dim=-1)``. Training (:func:`pyro_vae.fit`), evaluation
(:mod:`pyro_vae.evaluate`), the run folder (:mod:`pyro_vae.run`) and every command of
``pyro-vae`` work through this class and never ask which model they hold: they ask what
it can do.

A subclass sets :attr:`Model.kind` and implements :meth:`Model.model`,
:meth:`Model.guide`, :attr:`Model.data_dims` and :meth:`Model.from_options`; everything
else has a default:

==========================  ==========================================================
member                      what it says
==========================  ==========================================================
``kind``                    registry name (``--model``); ``config()["kind"]``
``options``                 the ``pyro-vae train`` options the model takes
``notation``                how tables name P(X), Q(z|X), the prior and the posterior
``latent``                  False for a model without latent variables (exact log P)
``data_dims``               widths of the data tensors; the last one is the target
``target``                  name of the observed site that is scored (``"x"``)
``check_data``              shapes and the likelihood's support, before training
``training_data``           the tensors and per-batch transforms of a data set
``evaluation_data``         the fixed tensors a split is scored on
``config`` / ``from_config``  constructor arguments as plain data, and back
``sample`` / ``reconstruct``  what the model can draw; :meth:`supports` asks
``completions_figure``      conditional draws, as a picture
``training_figures``        the figures ``pyro-vae train`` writes (names in ``figures``)
``exact_log_likelihood``    ``log P`` per point, where it has a closed form
``proposal``                what the evaluator samples the latents from (the guide)
``diagnostics``             model-specific numbers for the run's results (codebook use)
``empty_share``             a data-parallel step on a rank whose share of the batch is empty
==========================  ==========================================================

Shared pieces are written once: registering networks under the model's unique name in
Pyro's global param store (:meth:`Model.pyro_module`; names and their release are in
:mod:`pyro_vae.models.params`), and the config round trip.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import pyro
import torch
from torch import nn

from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import Likelihood, get_likelihood
from pyro_vae.models.params import claim_name, name_taken, release

if TYPE_CHECKING:
    from pyro_vae.data import Dataset
    from pyro_vae.train import History

#: names of the capabilities that :meth:`Model.supports` answers for
CAPABILITIES = ("sample", "reconstruct", "completions_figure", "exact_log_likelihood")


class Notation(NamedTuple):
    """How reports name a model's quantities, in Doersch's notation."""

    data: str = "P(X)"  # what the evaluator estimates
    guide: str = "Q(z|X)"
    prior: str = "P(z)"
    posterior: str = "P(z|X)"


class ModelData(NamedTuple):
    """The tensors a model trains on, as :meth:`Model.training_data` makes them.

    :ivar train: training tensors, sharing dimension 0, before the per-batch transforms.
    :ivar test: test tensors, fixed (one binarization or dequantization, if any).
    :ivar transforms: one callable (or ``None``) per tensor, applied to every training
        batch: pass as ``fit(..., batch_transform=transforms)``.
    """

    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    transforms: tuple[Callable | None, ...]


@dataclass(frozen=True)
class Option:
    """A ``pyro-vae train`` option that a model class takes.

    :ivar flag: ``"--z-dim"``; its ``dest`` (``z_dim``) names the value in the options.
    :ivar help: help text; ``--help`` adds the default.
    :ivar default: value when the option is not given (``None``: the help says what
        happens then).
    :ivar type: argparse ``type``.
    :ivar choices: argparse ``choices``.
    :ivar required: the model cannot be built without it.
    :ivar stored: reads the option's value back from a model's ``config()`` (for
        ``--resume``); default: the config entry named ``dest``.
    """

    flag: str
    help: str
    default: Any = None
    type: Callable | None = None
    choices: tuple | None = None
    required: bool = False
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
        return config.get(self.dest, self.default)


# --- the contract ---------------------------------------------------------------------


class Model(nn.Module):
    """Base class of every model: see the module docstring for the contract.

    :param str name: prefix of the model's entries in Pyro's param store; unique per
        live instance by default. Two live models cannot share a name.
    """

    #: registry name (``--model``), stored as ``config()["kind"]``
    kind: ClassVar[str]
    #: one-line description for ``pyro-vae train --help``
    summary: ClassVar[str] = ""
    #: ``pyro-vae train`` options this model takes (see :class:`Option`)
    options: ClassVar[tuple[Option, ...]] = ()
    #: how reports name the quantities
    notation: ClassVar[Notation] = Notation()
    #: False for a model with no latent variable: its ELBO is its exact log-likelihood
    latent: ClassVar[bool] = True
    #: plates the model nests; objectives with vectorized particles need it
    max_plate_nesting: ClassVar[int] = 1
    #: the observed site that evaluation scores
    target: ClassVar[str] = "x"
    #: has an ``encoder`` and a ``guide_family`` (:mod:`pyro_vae.guides`) for its one
    #: latent site ``"z"``, whose member :func:`pyro_vae.gaps.decompose_gap` refines per point
    supports_gap_decomposition: ClassVar[bool] = False
    #: constructor arguments rebuilt from their config by a factory (a likelihood is
    #: stored as ``likelihood.config()``); each is kept as an attribute of that name
    components: ClassVar[dict[str, Callable[..., Any]]] = {
        "likelihood": lambda config: get_likelihood(**config)
    }

    likelihood: Likelihood

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Record the arguments of the outermost constructor call, so that config()
        # and from_config() round-trip every subclass without code of its own.
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if "_arguments" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                del arguments["self"]
                for parameter in signature.parameters.values():
                    if parameter.kind is parameter.VAR_KEYWORD:  # **kwargs: by their names
                        arguments.update(arguments.pop(parameter.name))
                    elif parameter.kind is parameter.VAR_POSITIONAL and arguments.pop(
                        parameter.name
                    ):
                        raise TypeError(
                            f"{cls.__name__}: arguments passed through *{parameter.name} have "
                            "no names, so config() cannot store them; pass them by keyword"
                        )
                arguments.pop("name", None)
                self.__dict__["_arguments"] = arguments
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        # a subclass without an __init__ of its own takes no arguments to record
        self.__dict__.setdefault("_arguments", {})
        self._claim(name)

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

    # -- Pyro -------------------------------------------------------------------------

    def model(self, *data: torch.Tensor) -> Any:
        """The generative model, a Pyro function of the data tensors."""
        raise NotImplementedError

    def guide(self, *data: torch.Tensor) -> Any:
        """The guide, a Pyro function with the model's signature."""
        raise NotImplementedError

    #: what reports say about :meth:`proposal` where it is not the guide (``None``: it is)
    proposal_note: ClassVar[str | None] = None

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

    # -- data -------------------------------------------------------------------------

    @property
    def data_dims(self) -> tuple[int, ...]:
        """Widths of the data tensors ``model`` takes; the last one is the target."""
        raise NotImplementedError

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset: Dataset) -> Model:
        """Build an untrained model from ``pyro-vae train`` options for ``dataset``.

        :param dict options: the value of every :attr:`options` entry (defaults filled in).
        """
        raise NotImplementedError

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
            out[key] = _plain(value, f"{type(self).__name__}({key}=...)")
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

    # -- what the model can draw and show ---------------------------------------------

    def describe(self) -> str:
        """How reports name this model (``"VAE"``, ``"CVAE on task label"``)."""
        return type(self).__name__

    def supports(self, capability: str) -> bool:
        """Whether this model implements ``capability``, one of :data:`CAPABILITIES`."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {CAPABILITIES}")
        return getattr(type(self), capability) is not getattr(Model, capability)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num_samples`` draws from the model's prior, as means of the target's likelihood.

        :returns: ``(num_samples, data_dims[-1])``.
        """
        raise self.unsupported("sample")

    def reconstruct(self, *data: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at the guide's mean: reconstructions of the target."""
        raise self.unsupported("reconstruct")

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the target when it is an image, else ``None``."""
        return None

    #: completions are random draws (one picture per ``-n``), not one deterministic mean
    random_completions: ClassVar[bool] = True

    def completions_figure(
        self, dataset: Dataset, split: str, num_inputs: int, num_samples: int, seed: int
    ):
        """A figure of targets drawn given ``num_inputs`` conditions of ``split``."""
        raise self.unsupported("completions_figure")

    def exact_log_likelihood(self, *data: torch.Tensor) -> torch.Tensor:
        """``log P`` of the target per data point, ``(N,)``, where it has a closed form
        (or a sum small enough to do). A model whose instances differ in this raises
        :class:`~pyro_vae.errors.UsageError` for those that cannot."""
        raise self.unsupported("exact_log_likelihood")

    def diagnostics(self, *data: torch.Tensor) -> dict[str, Any]:
        """Plain-data numbers that describe the trained model on ``data`` (the test
        split), for the run's ``results.json``; scalars are also shown in
        ``results.md`` as ``name: value``. None by default."""
        return {}

    #: the file names :meth:`training_figures` may return; ``pyro-vae train
    #: --overwrite`` removes them from a folder it reuses
    figures: ClassVar[tuple[str, ...]] = ("loss.png",)

    def training_figures(self, dataset: Dataset, history: History, seed: int) -> dict[str, Any]:
        """``{file name: matplotlib figure}`` that ``pyro-vae train`` writes: the training
        curves, plus whatever the model can draw; the names are among :attr:`figures`."""
        from pyro_vae import plots

        title = f"{dataset.name}, {self.describe()}: ELBO per data point"
        return {"loss.png": plots.history_figure(history, title)}

    #: what to use instead, by capability, for the messages of :meth:`unsupported`
    hints: ClassVar[dict[str, str]] = {}

    def unsupported(self, capability: str) -> UsageError:
        """The error for a capability (:data:`CAPABILITIES`) this model lacks, with the
        class's hint."""
        hint = self.hints.get(capability, "")
        return UsageError(
            f"this {self.describe()} cannot {_CANNOT[capability]}" + (f"; {hint}" if hint else "")
        )


_CANNOT = {
    "sample": "draw samples from a prior",
    "reconstruct": "reconstruct its input",
    "completions_figure": "complete a condition",
    "exact_log_likelihood": "compute its log-likelihood in closed form",
}


def accepted_arguments(cls: type) -> set[str]:
    """Names a constructor takes, following ``**kwargs`` passed on to the parent class."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__ or klass is Model:
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON-ready plain data; tuples become lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    raise TypeError(
        f"{where}: {type(value).__name__} is not plain data, so the model's config() "
        "cannot store it; pass numbers, strings, lists or dicts, or declare it in "
        "Model.components with a factory"
    )
