"""Pieces every subcommand shares: a parser whose errors are one line, and the options
several subcommands take (their value types are in :mod:`pyro_vae.parsing`)."""

from __future__ import annotations

import argparse
import sys

from pyro_vae.parsing import path, seed


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``pyro-vae train: error: ...`` and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_run(parser: argparse.ArgumentParser, what: str = "`pyro-vae train`") -> None:
    """``--run DIR`` (or ``--run-dir DIR``), the run folder a command reads.

    ``--run-dir`` is for ``torchrun``, whose own parser reads ``--run`` as an ambiguous
    abbreviation of its ``--run-path`` even after the module name.
    """
    parser.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        type=path,
        required=True,
        help=f"run folder written by {what} (under torchrun: --run-dir)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")


def add_seed(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    """``--seed`` in ``[0, 2**32)``."""
    shown = "" if default is None else f" (default {default})"
    parser.add_argument("--seed", type=seed, default=default, help=f"in [0, 2**32){shown}")


def wrote(*paths) -> None:
    """The last line of a command: what it wrote."""
    print(f"pyro-vae: wrote {', '.join(str(p) for p in paths)}", file=sys.stdout)
