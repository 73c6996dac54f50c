"""Plain data read back from a file, checked field by field before it is used.

A run's files outlive the code that wrote them, and they can be edited or damaged: the
configuration in ``config.json`` or in a checkpoint is checked here against the types
that its dataclass, or the model's constructor, declares. A wrong value is refused with
one line naming the file and the field (``config.json: model.z_dim must be an integer,
got 'abc'``) rather than failing deep inside training or evaluation.

Types are read from the annotations as written (``int``, ``float | None``,
``Sequence[int]``); an annotation this module does not know (a class, say) accepts any
value, which the constructor then checks.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from typing import Any

from pyro_vae.errors import UsageError

#: what a value of each simple annotation must be, in the words of a message
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "None": "null",
}
#: what to do with a file that holds a value it should not
REMEDY = "restore the file, or train the run again"
_PLURAL = {"int": "integers", "float": "numbers", "str": "strings", "bool": "trues or falses"}
_SEQUENCE = re.compile(r"(?:Sequence|list|tuple)\[(\w+)(?:, \.\.\.)?\]")


def described(value: Any) -> str:
    """``value`` as a message shows it: JSON words for JSON values (``null``, ``a
    list``), ``repr`` for the rest."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def mapping(value: Any, where: str) -> dict[str, Any]:
    """``value`` as a dict of settings.

    :param str where: the file and field, for the message.
    :raises UsageError: if ``value`` is not an object with string keys.
    """
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UsageError(f"{where} must be an object of settings, not {described(value)}; {REMEDY}")
    return dict(value)


def _is(value: Any, name: str) -> bool | None:
    """Whether ``value`` is of the simple type ``name``; ``None`` for an unknown name."""
    if name == "None":
        return value is None
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "str":
        return isinstance(value, str)
    inner = _SEQUENCE.fullmatch(name)
    if inner and inner.group(1) in _PLURAL:
        return isinstance(value, (list, tuple)) and all(_is(v, inner.group(1)) for v in value)
    return None


def check_type(value: Any, annotation: Any, where: str) -> None:
    """Check ``value`` against a written annotation (``"int"``, ``"float | None"``,
    ``"Sequence[int]"``, or the type itself).

    :param str where: the file and field, for the message.
    :raises UsageError: naming the field, what it must be and what it holds.
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    expected = []
    for name in (part.strip() for part in text.split("|")):
        verdict = _is(value, name)
        if verdict is None or verdict:  # an unknown annotation accepts anything
            return
        inner = _SEQUENCE.fullmatch(name)
        expected.append(f"a list of {_PLURAL[inner.group(1)]}" if inner else _EXPECTED[name])
    raise UsageError(f"{where} must be {' or '.join(expected)}, got {described(value)}; {REMEDY}")


def build(config_class: type, values: Any, where: str, required: tuple[str, ...] = ()):
    """An instance of the dataclass ``config_class`` from the plain data ``values``,
    each field checked against its annotation; a field left out takes its default.

    :param str where: the file and block (``config.json: train``), for messages.
    :param required: fields that must be present.
    :raises UsageError: for a value that is no object, a missing or unknown field, or a
        value of the wrong type.
    """
    values = mapping(values, where)
    known = {f.name: f for f in fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(
            f"{where} has settings this version of pyro_vae does not know "
            f"({', '.join(unknown)}); upgrade pyro_vae"
        )
    for name in required:
        if name not in values:
            raise UsageError(f"{where} has no {name}; {REMEDY}")
    for name, value in values.items():
        check_type(value, known[name].type, f"{where}.{name}")
    return config_class(**values)


def check_arguments(
    parameters: dict[str, inspect.Parameter], values: dict[str, Any], where: str
) -> None:
    """Check a model's stored constructor arguments against the constructor's
    parameters (:func:`pyro_vae.models.config.constructor_parameters`): each one
    present that has no default, each value against its annotation.

    :param str where: the file and block (``config.json: model``), for messages.
    :raises UsageError: naming the argument.
    """
    for name, parameter in parameters.items():
        if name not in values:
            if parameter.default is inspect.Parameter.empty:
                raise UsageError(
                    f"{where} has no {name}, which the model's constructor needs; {REMEDY}"
                )
            continue
        if parameter.annotation is not inspect.Parameter.empty:
            check_type(values[name], parameter.annotation, f"{where}.{name}")
