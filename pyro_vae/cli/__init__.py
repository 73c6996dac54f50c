"""Command line: ``pyro-vae train``, ``sample``, ``complete``, ``evaluate`` and ``reproduce``.

One module per subcommand, each holding its parser and its command. Bad input (unknown
names, out-of-range numbers, unusable data, a mismatched run folder) prints one
``pyro-vae: error: ...`` line on standard error and exits with status 2; a diverged
run or a failed consistency check exits 1. From Python, :func:`run_command` runs the
same commands and raises those errors instead.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from collections.abc import Sequence

from pyro_vae import distributed, plugins
from pyro_vae.cli import complete, evaluate, reproduce, sample, train
from pyro_vae.cli.options import Parser, add_plugin, one_line, plugin_arguments
from pyro_vae.distributed import SharedError
from pyro_vae.errors import CommandFailed, RunWarning, TrainingDiverged, UsageError, Worded
from pyro_vae.version import __version__


def build_parser(parser_class: type[Parser] = Parser) -> Parser:
    """The argument parser of every subcommand.

    :param parser_class: the class of the parser and of its subcommands' parsers.
    """
    parser = parser_class(prog="pyro-vae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pyro_vae {__version__}")
    add_plugin(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (train, sample, complete, evaluate, reproduce):
        command.add_parser(sub)
    for command in sub.choices.values():
        add_plugin(command, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyro-vae`` console script and of ``python -m pyro_vae``.

    Under ``torchrun`` (``train`` and ``evaluate`` only) every process runs this; the
    command joins the process group (:func:`pyro_vae.distributed.setup`) once the
    settings every rank can check alone are checked, and leaves it at the end. Bad
    launcher settings, the same on every rank, are printed by rank 0 only; other errors
    by every rank that meets them, tagged with the rank on ranks other than 0.

    Models and likelihoods from outside the package (:mod:`pyro_vae.plugins`: entry
    points, ``--plugin``, ``PYRO_VAE_PLUGINS``) are registered first, so that the
    choices and ``--help`` name them.

    From Python, :func:`run_command` runs the same commands and raises their errors.

    :param argv: arguments without the program name; ``sys.argv[1:]`` by default.
    :returns: exit status (0 success, 1 training diverged or a failed check, 2 bad input).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        plugins.discover(plugin_arguments(argv))
    except UsageError as err:
        print(f"pyro-vae: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    return _command(args, flag_names(parser, args.command), raising=False)


def run_command(argv: str | Sequence[str]) -> None:
    """Run a ``pyro-vae`` command from Python: what :func:`main` does, but an error is
    raised where the command line prints it and exits with a status::

        run_command(["train", "--dataset", "digits", "--epochs", "1", "--out", "runs/d"])
        run_command("sample --run runs/d -n 16")

    The command prints what it prints on the command line (progress, ``pyro-vae:
    wrote ...``, a warning about the run as one line); ``--help`` and ``--version``
    print and return.

    :param argv: the arguments without the program name, as a list, or as one string
        split like a shell would (``"sample --run runs/d -n 16"``).
    :raises UsageError: bad input, as the command line's one-line message without its
        ``pyro-vae: error:`` (the settings it names given as flags), an argument the
        parser refuses included (``--epochs 0``).
    :raises TrainingDiverged: the training loss or the parameters became non-finite.
    :raises OSError: a file could not be read or written.
    :raises CommandFailed: the command ended with a nonzero status without raising (a
        failed consistency check of ``evaluate``, a failed experiment of ``reproduce``);
        its :attr:`~pyro_vae.errors.CommandFailed.status` is the exit status.
    """
    arguments = shlex.split(argv) if isinstance(argv, str) else [str(a) for a in argv]
    plugins.discover(plugin_arguments(arguments))
    parser = build_parser(_RaisingParser)
    try:
        args = parser.parse_args(arguments)
    except _Finished:  # --help, --version
        return
    status = _command(args, flag_names(parser, args.command), raising=True)
    if status:
        raise CommandFailed(
            f"pyro-vae {args.command} ended with exit status {status}; its errors are "
            "printed above",
            status,
        )


def _command(args: argparse.Namespace, flags: dict[str, str], raising: bool) -> int:
    """Run the parsed command: its exit status, or, with ``raising``, its errors raised
    in the command line's words (``flags``)."""
    rank = distributed.launch_rank()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line(warnings.showwarning)
        try:
            distributed.check_environment()
            if distributed.launched() and not getattr(args, "distributed", False):
                raise distributed.LaunchError(
                    f"`pyro-vae {args.command}` runs in one process; only train and "
                    "evaluate run under torchrun"
                )
            return args.func(args)  # train and evaluate join the process group themselves
        except (UsageError, OSError, TrainingDiverged) as err:
            if raising:
                _reword(err, flags)
                raise
            return _report(err, flags, rank)
        finally:
            distributed.teardown()


def _report(err: Exception, flags: dict[str, str], rank: int) -> int:
    """Print a command's error as one line; its exit status."""
    if isinstance(err, SharedError):  # the same on every rank: rank 0 says it
        if rank == 0:
            print(f"pyro-vae: error: {_said(err, flags)}", file=sys.stderr)
        else:  # let rank 0 print before torchrun stops it for this rank's exit
            time.sleep(LAUNCH_ERROR_GRACE_S)
        return 2
    if isinstance(err, TrainingDiverged):
        print(f"pyro-vae{_tag(rank)}: {_said(err, flags)}", file=sys.stderr)
        return 1
    # UsageError, or OSError: an output path under a file ...
    print(f"pyro-vae: error{_tag(rank)}: {_said(err, flags)}", file=sys.stderr)
    return 2


def _reword(err: Exception, flags: dict[str, str]) -> None:
    """Make ``str(err)`` the command line's message: the settings it names given as
    flags, on one line."""
    if isinstance(err, Worded):
        err.args = (_said(err, flags),)


class _Finished(Exception):
    """``--help`` or ``--version`` has printed what it prints."""


class _RaisingParser(Parser):
    """The parser of :func:`run_command`: an error raises :class:`UsageError` with the
    message the command line prints, and ``--help`` and ``--version`` return."""

    def error(self, message: str):
        raise UsageError(f"{one_line(message)} (see {self.prog} --help)") from None

    def exit(self, status: int = 0, message: str | None = None):
        if status:
            raise UsageError(one_line(message or f"{self.prog} exited with status {status}"))
        if message:
            print(message, end="", file=sys.stderr)
        raise _Finished


def flag_names(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``{setting: flag}`` for every option of ``pyro-vae COMMAND``: the words in which
    the command line names the settings that library errors name
    (:class:`~pyro_vae.errors.Worded`), ``batch_size`` -> ``--batch-size``."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names: dict[str, str] = {}
    for action in subparsers.choices[command]._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and action.dest != "help":
            names.setdefault(action.dest, long[0])
    return names


def _said(err: BaseException, flags: dict[str, str]) -> str:
    """An error's message, with the settings it names given as flags, on one line: a
    control character it quotes from the input (a pasted carriage return) is escaped."""
    return one_line(err.worded(flags) if isinstance(err, Worded) else str(err))


#: seconds a rank other than 0 waits before exiting on a launch error
LAUNCH_ERROR_GRACE_S = 1.0


def _tag(rank: int) -> str:
    """`` (rank r)`` on the ranks other than 0 of a torchrun job, whose errors may be
    their own."""
    return f" (rank {rank})" if rank else ""


def _one_line(show):
    """``warnings.showwarning`` that prints a :class:`RunWarning` as one line (on rank 0)
    and hands every other warning to ``show``."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, RunWarning):
            return show(message, category, filename, lineno, file, line)
        if distributed.is_main():
            print(f"pyro-vae: warning: {message}", file=sys.stderr)
        return None

    return showwarning


__all__ = ["build_parser", "flag_names", "main", "run_command"]
