"""How a model's constructor arguments become plain data and back.

:func:`record_arguments` wraps a model class's ``__init__`` so that the arguments of the
outermost constructor call are kept; :meth:`~pyro_vae.models.base.Model.config` stores
them with :func:`plain`, and :meth:`~pyro_vae.models.base.Model.from_config` passes them
back, after :func:`accepted_arguments` has checked that the constructor takes them.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any

import numpy as np


def record_arguments(cls: type, stop: type) -> None:
    """Make ``cls.__init__`` record the arguments of the outermost constructor call in
    ``self.__dict__["_arguments"]`` (``**kwargs`` by their names, ``name`` left out).

    :param stop: the base class whose own ``__init__`` takes no recorded arguments.
    :raises TypeError: at construction, for arguments passed through ``*args``: they have
        no names to store.
    """
    if "__init__" not in cls.__dict__ or cls is stop:
        return
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self, *args: Any, **kw: Any) -> None:
        outermost = "_arguments" not in self.__dict__
        if outermost:
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments["self"]
            for parameter in signature.parameters.values():
                if parameter.kind is parameter.VAR_KEYWORD:  # **kwargs: by their names
                    arguments.update(arguments.pop(parameter.name))
                elif parameter.kind is parameter.VAR_POSITIONAL and arguments.pop(parameter.name):
                    raise TypeError(
                        f"{cls.__name__}: arguments passed through *{parameter.name} have "
                        "no names, so config() cannot store them; pass them by keyword"
                    )
            arguments.pop("name", None)
            self.__dict__["_arguments"] = arguments
        init(self, *args, **kw)
        if outermost:
            self._constructed()

    cls.__init__ = recording_init


def accepted_arguments(cls: type) -> set[str]:
    """Names a constructor takes, following ``**kwargs`` passed on to the parent class
    (up to, not including, the contract's own ``__init__``)."""
    return set(constructor_parameters(cls))


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of a model's constructor, ``self`` excluded, following
    ``**kwargs`` passed on to the parent class (the first class to declare a name wins):
    their annotations and defaults say what a stored configuration may hold."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__ or klass.__module__ == "pyro_vae.models.base":
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for p in parameters:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return found


def plain(value: Any, where: str) -> Any:
    """``value`` as JSON-ready plain data; tuples become lists.

    :param str where: the argument, for the message.
    :raises TypeError: for a value that is not plain data.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats
        return float(value)
    if isinstance(value, (tuple, list)):
        return [plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, where) for k, v in value.items()}
    raise TypeError(
        f"{where}: {type(value).__name__} is not plain data, so the model's config() "
        "cannot store it; pass numbers, strings, lists or dicts, or declare it in "
        "Model.components with a factory"
    )


def differences(mine: dict[str, Any], stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The settings in which a model's :meth:`~pyro_vae.models.base.Model.config` differs
    from a stored one: ``(key, mine, stored)``, nested settings (a likelihood's) named
    ``likelihood.temperature``. A setting that either side lacks (one added to the
    constructor since the file was written) or that the two hold in different forms is
    left out: only values that can be compared are.
    """
    found = []
    for key, value in mine.items():
        if key not in stored:
            continue
        theirs = stored[key]
        if isinstance(value, dict) and isinstance(theirs, dict):
            found += [(f"{key}.{k}", a, b) for k, a, b in differences(value, theirs)]
        elif isinstance(value, dict) == isinstance(theirs, dict) and value != theirs:
            found.append((key, value, theirs))
    return found
