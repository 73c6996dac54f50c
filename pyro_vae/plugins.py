"""Models and likelihoods from outside this package: entry points, modules and files.

Three ways bring a user's model (a :class:`~pyro_vae.models.Model` subclass with its own
``kind``) or likelihood (a :class:`~pyro_vae.likelihoods.Likelihood` subclass with its
own ``name``) to ``pyro-vae``, all read by :func:`discover` before the command line
builds its choices:

- an installed package declares them as entry points of the groups
  :data:`ENTRY_POINT_GROUPS` (in its ``pyproject.toml``: ``[project.entry-points
  ."pyro_vae.models"]`` ``mogvae = "my_package.model:MoGVAE"``); an entry point names a
  class, or a module whose import registers its classes;
- ``pyro-vae --plugin my_package.model`` or ``--plugin path/to/model.py`` (repeatable);
- the environment variable :data:`ENVIRONMENT`, a list of the same separated by
  ``os.pathsep``.

A module or file named so registers every model and likelihood class it defines or
exports (those that set their own ``kind`` or ``name``). A run folder records where its model and
likelihood came from (:func:`provenance`), and reading the run imports them again
(:func:`restore`), so ``sample``, ``evaluate``, ``complete``, ``--resume`` and
:func:`pyro_vae.open_run` need no flag. A plugin that cannot be imported is one
:class:`PluginError` naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from pyro_vae import schema
from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import LIKELIHOODS, Likelihood, register_likelihood
from pyro_vae.models import MODELS, Model, register

#: entry-point groups: models, likelihoods
ENTRY_POINT_GROUPS = ("pyro_vae.models", "pyro_vae.likelihoods")
#: plugins named by the environment, separated by ``os.pathsep``
ENVIRONMENT = "PYRO_VAE_PLUGINS"

#: the files imported as plugins: {module name: absolute path}
_FILES: dict[str, str] = {}
#: what :func:`load` has imported: {spec: module}
_LOADED: dict[str, ModuleType] = {}


class PluginError(UsageError):
    """A plugin that cannot be imported, or that registers nothing usable."""


def load(spec: str) -> ModuleType:
    """Import the plugin ``spec`` (a module name, or the path of a ``.py`` file) once,
    and register the models and likelihoods it defines.

    :raises PluginError: naming the plugin and what went wrong, in one line.
    """
    if spec in _LOADED:
        return _LOADED[spec]
    is_file = spec.endswith(".py") or os.sep in spec or (os.altsep or os.sep) in spec
    try:
        module = _import_file(Path(spec)) if is_file else importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as err:  # a plugin's own bug: any exception, said in one line
        what = f"the plugin file {spec}" if is_file else f"the plugin module {spec!r}"
        raise PluginError(f"{what} cannot be imported: {type(err).__name__}: {err}") from err
    _register_module(module, spec)
    _LOADED[spec] = module
    return module


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise PluginError(f"the plugin file {path} does not exist")
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"pyro_vae_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickling and dataclasses look classes up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILES[name] = str(path)
    return module


def _register_module(module: ModuleType, spec: str) -> None:
    """Register the model and likelihood classes that ``module`` defines or exports (a
    package's ``__init__`` that imports them from its modules)."""
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if origin(obj) is not None:  # this package's own classes are registered already
            _register_class(obj, spec)


def _register_class(cls: type, spec: str) -> None:
    try:
        if issubclass(cls, Model) and "kind" in cls.__dict__ and not inspect.isabstract(cls):
            register(cls)
        elif issubclass(cls, Likelihood) and "name" in cls.__dict__:
            register_likelihood(cls)
    except UsageError as err:
        raise PluginError(f"the plugin {spec}: {err}") from err


def discover(plugins: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> None:
    """Register the models and likelihoods of installed entry points, of the plugins
    named in the environment (:data:`ENVIRONMENT`) and of ``plugins``.

    :param plugins: module names or ``.py`` paths (``--plugin``).
    :param environ: the environment (``os.environ`` by default).
    :raises PluginError: for a plugin or entry point that cannot be imported.
    """
    for group in ENTRY_POINT_GROUPS:
        for entry in importlib.metadata.entry_points(group=group):
            _load_entry_point(entry)
    named = (environ if environ is not None else os.environ).get(ENVIRONMENT, "")
    for spec in [*named.split(os.pathsep), *plugins]:
        if spec.strip():
            load(spec.strip())


def _load_entry_point(entry: importlib.metadata.EntryPoint) -> None:
    key = f"entry point {entry.name} = {entry.value} ({entry.group})"
    if key in _LOADED:
        return
    try:
        obj = entry.load()
    except Exception as err:
        raise PluginError(
            f"the {key} cannot be imported: {type(err).__name__}: {err}; reinstall or "
            "uninstall the package that declares it"
        ) from err
    if isinstance(obj, ModuleType):
        _register_module(obj, key)
    elif isinstance(obj, type):
        _register_class(obj, key)
    else:
        raise PluginError(f"the {key} names {obj!r}, neither a class nor a module")
    _LOADED[key] = obj


def origin(cls: type) -> str | None:
    """Where ``cls`` comes from, as :func:`load` takes it: its module's name, or the path
    of the plugin file that defined it; ``None`` for the classes of this package."""
    module = cls.__module__
    if module == "pyro_vae" or module.startswith("pyro_vae."):
        return None
    return _FILES.get(module, module)


def provenance(model: Model) -> dict[str, str]:
    """What a run folder records of where its model and likelihood came from:
    ``{"model": ..., "likelihood": ...}``, each entry only for a class from outside this
    package."""
    found = {"model": origin(type(model))}
    likelihood = getattr(model, "likelihood", None)
    if isinstance(likelihood, Likelihood):
        found["likelihood"] = origin(type(likelihood))
    return {part: spec for part, spec in found.items() if spec is not None}


def restore(recorded: object, source: str, model: object = None) -> dict[str, str]:
    """Import what a run recorded (:func:`provenance`, read from a file and checked
    here) so that its classes are registered; a part whose class is registered already
    (by ``--plugin`` from another place, say) is not imported again.

    :param str source: the file that recorded it, for messages.
    :param model: the run's model configuration, which names the kind and likelihood.
    :returns: the record, checked.
    :raises UsageError: for a record that is no ``{part: module or file}`` object.
    :raises PluginError: naming the part, the module or file, and the fix.
    """
    recorded = schema.mapping(recorded, f"{source}: plugins")
    for part, spec in recorded.items():
        schema.check_type(spec, "str", f"{source}: plugins.{part}")
    for part, spec in recorded.items():
        if _already_there(spec) or _registered(part, model):
            continue
        try:
            load(spec)
        except PluginError as err:
            cause = err.__cause__
            why = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
            raise PluginError(
                f"{source}: the run's {part} comes from {spec}, which cannot be imported "
                f"({why}); install the package that provides it, or pass --plugin with its "
                "module or file"
            ) from err
    return recorded


def _registered(part: str, model: object) -> bool:
    """Whether the class a run's ``part`` names is registered already."""
    if not isinstance(model, dict):
        return False
    if part == "model":
        return model.get("kind") in MODELS
    likelihood = model.get("likelihood")
    return isinstance(likelihood, dict) and likelihood.get("name") in LIKELIHOODS


def _already_there(spec: str) -> bool:
    return spec in _LOADED or spec in sys.modules or spec in _FILES.values()


__all__ = [
    "ENTRY_POINT_GROUPS",
    "ENVIRONMENT",
    "PluginError",
    "discover",
    "load",
    "origin",
    "provenance",
    "restore",
]
