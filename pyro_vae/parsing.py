"""Parsers of option values, one of each: ``argparse`` types that refuse out-of-range
values with a message naming the range (the command line exits with status 2).

Model options (:class:`~pyro_vae.models.base.Option`) and the subcommands share them;
:meth:`~pyro_vae.models.base.Option.same_flag` compares them by identity, so an option
that two models declare must use the same object (the module-level ones below). The
bounds of the ranges, and why, are in :mod:`pyro_vae.limits`.
"""

from __future__ import annotations

import argparse
import unicodedata
from collections.abc import Callable
from pathlib import Path

from pyro_vae.limits import MAX_WIDTH, in_range

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


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer ``>= minimum`` (and ``<= maximum``, when given)."""
    shown = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"

    def parse(text: str) -> int:
        value = integer(text)
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected an integer {shown}, got {text}")
        return value

    parse.__name__ = f"integer {shown}"
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


def between(low: float, high: float, *, open_low: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]``, or ``(low, high]`` with ``open_low`` (a
    :func:`real`)."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
    return real(lambda v: in_range(v, low, high, open_low=open_low), f"a number in {interval}")


def number_or(
    words: tuple[str, ...], within: Callable[[str], float] | None = None
) -> Callable[[str], float | str]:
    """One of ``words``, or a number (``--sigma learned`` or ``--sigma 0.1``).

    :param within: a :func:`real` for a number in a range; any number by default.
    """
    within = within or real(lambda v: True, "a number")

    def parse(text: str) -> float | str:
        if text in words:
            return text
        try:
            return within(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected {within.__name__} or one of {', '.join(words)}, got {text!r}"
            ) from None

    parse.__name__ = f"{within.__name__} or {'/'.join(words)}"
    return parse


def seed(text: str) -> int:
    """An integer seed in ``[0, 2**32)``."""
    value = integer(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed must lie in [0, 2**32), got {text}")
    return value


def positive_list(text: str) -> list[int]:
    """``"400,200"`` -> ``[400, 200]``: comma-separated integers, every one in
    ``[1, MAX_WIDTH]`` (:data:`~pyro_vae.limits.MAX_WIDTH`), in their order."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    if max(values) > MAX_WIDTH:
        raise argparse.ArgumentTypeError(f"expected integers <= {MAX_WIDTH}, got {text!r}")
    return values


def positive_set(text: str) -> tuple[int, ...]:
    """``"10,1,10"`` -> ``(1, 10)``: as :func:`positive_list`, sorted, each value once."""
    return tuple(sorted(set(positive_list(text))))


def path(text: str) -> Path:
    """A file or folder name; an empty one (which names the current folder) and one with
    control characters (a pasted carriage return, say) are refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a path, got {text!r}; name the folder, or . for the current one"
        )
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise argparse.ArgumentTypeError(
            f"expected a path without control characters, got {text!r}"
        )
    return Path(text)


#: an integer of at least 1 (shared by every option that takes one)
positive_int = at_least(1)
#: a width, a latent or codebook size: an integer in ``[1, MAX_WIDTH]``
size = at_least(1, MAX_WIDTH)
#: a number strictly between 0 and 1
open_unit = real(lambda v: 0 < v < 1, "a number in (0, 1)")


# --- name lists (reproduce) -------------------------------------------------------------


def names(text: str) -> list[str]:
    """``"ring, vqvae,ring"`` -> ``["ring", "vqvae"]``: comma-separated names, each once,
    in their order; at least one (an empty list would silently mean "all")."""
    values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values
