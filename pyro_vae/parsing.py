"""Parsers of option values, one of each: ``argparse`` types that refuse out-of-range
values with a message naming the range (the command line exits with status 2).

Model options (:class:`~pyro_vae.models.base.Option`) and the subcommands share them;
:meth:`~pyro_vae.models.base.Option.same_flag` compares them by identity, so an option
that two models declare must use the same object (the module-level ones below).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

#: seeds must fit the generators they feed (numpy's legacy seeding takes 32 bits)
SEED_LIMIT = 2**32


def integer(text: str) -> int:
    """An integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """A float (``inf`` and ``nan`` parse; the range checks of :func:`real` refuse them)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer ``>= minimum``."""

    def parse(text: str) -> int:
        value = integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def real(accept: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    """A number for which ``accept`` holds (NaN never does).

    :param str requirement: completes "expected ...", as in ``"a number >= 0"``.
    """

    def parse(text: str) -> float:
        value = number(text)
        if not (value == value and accept(value)):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        return value

    parse.__name__ = requirement
    return parse


def number_or(words: tuple[str, ...]) -> Callable[[str], float | str]:
    """A number, or one of ``words`` (``--sigma 0.1`` or ``--sigma learned``)."""

    def parse(text: str) -> float | str:
        if text in words:
            return text
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or one of {', '.join(words)}, got {text!r}"
            ) from None

    parse.__name__ = f"number or {'/'.join(words)}"
    return parse


def seed(text: str) -> int:
    """An integer seed in ``[0, 2**32)``."""
    value = integer(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed must lie in [0, 2**32), got {text}")
    return value


def positive_list(text: str) -> list[int]:
    """``"400,200"`` -> ``[400, 200]``: comma-separated integers, every one at least 1,
    in their order."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def positive_set(text: str) -> tuple[int, ...]:
    """``"10,1,10"`` -> ``(1, 10)``: as :func:`positive_list`, sorted, each value once."""
    return tuple(sorted(set(positive_list(text))))


#: an integer of at least 1 (shared by every option that takes one)
positive_int = at_least(1)
#: a number of at least 0
non_negative = real(lambda v: v >= 0, "a number >= 0")
#: a number strictly between 0 and 1
open_unit = real(lambda v: 0 < v < 1, "a number in (0, 1)")


# --- bounded sizes, paths and name lists (evaluate, sample, complete, reproduce) -------


def bounded(minimum: int, maximum: int) -> Callable[[str], int]:
    """An integer in ``[minimum, maximum]``: the upper bound refuses a size whose work or
    memory no machine has before any of it starts (each caller says why in its help)."""
    low = at_least(minimum)

    def parse(text: str) -> int:
        value = low(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected an integer <= {maximum}, got {text}")
        return value

    parse.__name__ = f"integer in [{minimum}, {maximum}]"
    return parse


def path(text: str) -> Path:
    """A file or folder name that is not empty nor blank: ``Path("")`` would be the
    current folder, which nobody means by an empty string (``.`` says it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a path, got {text!r}; write . for the current folder"
        )
    return Path(text)


def names(text: str) -> list[str]:
    """``"ring, vqvae,ring"`` -> ``["ring", "vqvae"]``: comma-separated names, each once,
    in their order; at least one (an empty list would silently mean "all")."""
    values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values
