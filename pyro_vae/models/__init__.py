"""Models on one contract (:mod:`pyro_vae.models.base`), one file each, and their registry.

A new model is a subclass of :class:`~pyro_vae.models.base.Model` in its own file plus
one entry in :data:`MODELS` (or a call to :func:`register` from your own code); the
command line, the run folder and the evaluator then work with it unchanged. What such a
subclass needs is exported here: :class:`Option` for its ``pyro-vae train`` options, and
:func:`likelihood_from_options`, :func:`guide_family_from_options` and
:func:`architecture` for building its parts in ``from_options`` as the built-in models do.
"""

from __future__ import annotations

from pyro_vae import schema
from pyro_vae.errors import UsageError
from pyro_vae.models.base import CAPABILITIES, Completions, Model, ModelData, Notation, Option
from pyro_vae.models.config import constructor_parameters
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.hvae import HVAE
from pyro_vae.models.options import architecture, guide_family_from_options, likelihood_from_options
from pyro_vae.models.regressor import Regressor
from pyro_vae.models.ssvae import SSVAE
from pyro_vae.models.vae import VAE
from pyro_vae.models.vqvae import VQVAE

#: model classes by :attr:`~pyro_vae.models.base.Model.kind`, in the order ``--help`` lists them
MODELS: dict[str, type[Model]] = {
    cls.kind: cls for cls in (VAE, CVAE, Regressor, HVAE, VQVAE, SSVAE)
}
#: the kind ``pyro-vae train`` builds without ``--model``, and that of the first runs,
#: whose configurations named no kind
DEFAULT_KIND = VAE.kind


def register(cls: type[Model]) -> type[Model]:
    """Add a model class to :data:`MODELS` (usable as a class decorator).

    Registering a class again replaces its entry: the same class object, or a new one
    of the same module and qualified name (a re-run notebook cell, a reloaded module).
    Another class under a kind already taken, a built-in kind included, is refused.

    :raises UsageError: if the class is no :class:`Model`, sets no ``kind`` of its own,
        its kind belongs to another class, one of its options names no constructor
        argument and has no ``stored`` (``--resume`` could not read the option's value
        back), or it declares an option flag that another registered model parses
        differently (another type or other choices).
    """
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise UsageError(f"{cls!r} is not a subclass of pyro_vae.models.Model")
    kind = cls.__dict__.get("kind")
    if not isinstance(kind, str) or not kind:
        inherited = getattr(cls, "kind", None)
        also = f" (it inherits {inherited!r}, which names its base class)" if inherited else ""
        raise UsageError(
            f"{cls.__name__} sets no kind of its own{also}; give it a class attribute "
            'kind = "..." naming it for {model} and config()',
            settings=("model",),
        )
    if kind in MODELS and not _same_class(MODELS[kind], cls):
        raise UsageError(
            f"kind {kind!r} already belongs to {_named(MODELS[kind])}; cannot register "
            f"{_named(cls)} under it: give it a kind of its own"
        )
    _check_options(cls)
    _check_arguments(cls)
    for option in cls.options:
        for other_kind, other in MODELS.items():
            if other_kind == kind:  # the entry this class replaces
                continue
            for theirs in other.options:
                if theirs.flag == option.flag and not theirs.same_flag(option):
                    raise UsageError(
                        f"{cls.__name__} declares {option.flag} with another type or other "
                        f"choices than {{model}} {other_kind}; reuse that Option or rename "
                        "the flag",
                        settings=("model",),
                    )
    MODELS[kind] = cls
    return cls


def _same_class(registered: type, cls: type) -> bool:
    """Whether ``cls`` is ``registered`` or a new definition of it (the same module and
    qualified name: a re-run notebook cell, a reloaded module)."""
    return cls is registered or (cls.__module__, cls.__qualname__) == (
        registered.__module__,
        registered.__qualname__,
    )


def _named(cls: type) -> str:
    """``VAE (module pyro_vae.models.vae)``: a class and where it was defined."""
    return f"{cls.__qualname__} (module {cls.__module__})"


#: the class attributes of the contract (:class:`Model`) that an instance must not shadow
CONTRACT_ATTRIBUTES = frozenset(
    name for name, kind in Model.__annotations__.items() if "ClassVar" in str(kind)
)


def _check_arguments(cls: type[Model]) -> None:
    """:raises UsageError: for a constructor argument named like an attribute of the
    contract (``components``, ``options``, ...): kept as an attribute of its name, as
    :meth:`~Model.config` needs, it would replace the contract's value on the instance."""
    clash = sorted(set(constructor_parameters(cls)) & CONTRACT_ATTRIBUTES)
    if clash:
        raise UsageError(
            f"{cls.__name__}'s constructor takes {', '.join(clash)}, the name of an "
            "attribute of the model contract (pyro_vae.models.Model); rename the argument "
            "(and its option)"
        )


def _check_options(cls: type[Model]) -> None:
    """:raises UsageError: for an option whose value goes to no constructor argument of
    ``cls`` and that has no ``stored``: ``--resume`` would compare the value given with
    the option's default instead of the run's."""
    parameters = constructor_parameters(cls)
    for option in cls.options:
        name = option.argument or option.dest
        if option.stored is not None or name in parameters:
            continue
        names = f"argument={name!r}" if option.argument else f"its name {name!r}"
        raise UsageError(
            f"{cls.__name__} declares {option.flag}, but {names} is no argument of "
            f"{cls.__name__}.__init__ ({', '.join(parameters) or 'none'}), so a run could not "
            f"say which value it was built with; name the flag after the constructor argument "
            f'that takes the value, pass argument="..." to Option naming that argument, or '
            "give Option a stored= function that reads the value from the model's config()"
        )


def model_class(kind: str, source: str = "") -> type[Model]:
    """The class registered under ``kind``.

    :param str source: where the kind was read, for the message.
    :raises UsageError: for a kind nobody registered.
    """
    if kind not in MODELS:
        where = f"{source} holds a model of kind {kind!r}, which" if source else f"{kind!r}"
        raise UsageError(
            f"{where} is not a registered model ({', '.join(MODELS)}); name the module or "
            "file that defines it with --plugin (pyro_vae.models.register from Python), or "
            "install the package that provides it"
        )
    return MODELS[kind]


def check_config(config: dict, where: str) -> None:
    """Check a model's stored configuration (:meth:`~pyro_vae.models.base.Model.config`
    read from a file): its kind a name and, for a registered kind, each constructor
    argument against the constructor's annotation, none that lacks a default missing.

    :param str where: the file and block (``config.json: model``), for messages.
    :raises UsageError: naming the field.
    """
    kind = config.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise UsageError(
            f"{where}.kind must be the name of a model, got {schema.described(kind)}; "
            + schema.REMEDY
        )
    if kind in MODELS:
        schema.check_arguments(constructor_parameters(MODELS[kind]), config, where)


__all__ = [
    "CAPABILITIES",
    "CVAE",
    "DEFAULT_KIND",
    "HVAE",
    "MODELS",
    "SSVAE",
    "VAE",
    "VQVAE",
    "Completions",
    "Model",
    "ModelData",
    "Notation",
    "Option",
    "Regressor",
    "architecture",
    "check_config",
    "guide_family_from_options",
    "likelihood_from_options",
    "model_class",
    "register",
]
