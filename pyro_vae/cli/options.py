"""Pieces every subcommand shares: a parser whose errors are one line, and the options
several subcommands take (their value types are in :mod:`pyro_vae.parsing`)."""

from __future__ import annotations

import argparse
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pyro_vae import distributed, locks, staging
from pyro_vae.errors import RunWarning, UsageError
from pyro_vae.parsing import path, seed


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``pyro-vae train: error: ...`` and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """``text`` with every control character escaped (``\\r`` for a carriage return): a
    message that quotes what the user typed stays one line."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c).startswith("C") else c for c in text)


def add_plugin(parser: argparse.ArgumentParser, default=None) -> None:
    """``--plugin MODULE_OR_FILE`` (repeatable): models and likelihoods from outside the
    package. :func:`pyro_vae.cli.main` reads it (:func:`plugin_arguments`) before it
    builds the parser; here it is declared for ``--help`` and so that the parser takes it
    before and after the subcommand."""
    parser.add_argument(
        "--plugin",
        action="append",
        default=default,
        metavar="MODULE_OR_FILE",
        help="import a module (my_package.models) or a file (models.py) whose model and "
        "likelihood classes join the choices; repeatable. Installed packages' entry points "
        "(pyro_vae.models, pyro_vae.likelihoods) and PYRO_VAE_PLUGINS are read as well",
    )


def plugin_arguments(argv: list[str]) -> list[str]:
    """The values of every ``--plugin`` in ``argv`` (``--plugin X`` or ``--plugin=X``)."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            found.append(arg.split("=", 1)[1])
    return found


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


def add_force(parser: argparse.ArgumentParser, what: str) -> None:
    """``--force``: replace the earlier output of the same command."""
    parser.add_argument(
        "--force", action="store_true", help=f"replace an earlier {what} of the same name"
    )


def check_new(paths, force: bool, other: str = ", or choose another --out") -> None:
    """Refuse to replace an earlier output, unless ``force``.

    :param str other: the other way out, for the message.
    :raises UsageError: naming the first of ``paths`` that exists.
    """
    for output in paths:
        if Path(output).exists() and not force:
            raise UsageError(
                f"{output} exists, written by an earlier command; pass --force to replace it{other}"
            )


@contextmanager
def writing(folder: Path, command: str, check: Callable[[], None] = lambda: None) -> Iterator:
    """Hold the lock of run folder ``folder`` for the block (on rank 0 under torchrun),
    after finishing or undoing an interrupted ``--overwrite`` there
    (:func:`pyro_vae.staging.recover`) and calling ``check`` under the lock.

    :param str command: what holds it, for the message of a second writer.
    :param check: raises :class:`UsageError` to refuse (every rank raises it).
    :raises UsageError: another process holds the lock, or ``check`` refused.
    """
    with ExitStack() as held:

        def decide() -> None:
            held.enter_context(locks.hold(folder, command))
            done = staging.recover(folder)
            if done:
                warnings.warn(f"{folder}: {done}", RunWarning, stacklevel=1)
            check()

        distributed.agree(decide)
        yield


@contextmanager
def writing_output(folder, out: Path, command: str, force: bool) -> Iterator:
    """The block that writes ``out``, the output of a command run on the run in
    ``folder`` (a :class:`~pyro_vae.run.RunFolder`): refused where ``out`` exists unless
    ``force``; holding the run folder's lock (:func:`writing`) where ``out`` lies in it.

    :raises UsageError: ``out`` exists, or another process writes into the folder.
    """
    if out.resolve().parent != folder.folder.resolve():
        check_new([out], force)
        yield
        return
    with writing(folder.folder, command, check=lambda: check_new([out], force)):
        yield
