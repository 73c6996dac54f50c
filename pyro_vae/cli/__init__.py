"""Command line: ``pyro-vae train``, ``sample``, ``complete``, ``evaluate`` and ``reproduce``.

One module per subcommand, each holding its parser and its command. Bad input (unknown
names, out-of-range numbers, unusable data, a mismatched run folder) prints one
``pyro-vae: error: ...`` line on standard error and exits with status 2; a diverged
run or a failed consistency check exits 1.
"""

from __future__ import annotations

import sys

from pyro_vae import __version__
from pyro_vae.cli import complete, evaluate, reproduce, sample, train
from pyro_vae.cli.options import Parser
from pyro_vae.errors import TrainingDiverged, UsageError


def build_parser() -> Parser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="pyro-vae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pyro_vae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (train, sample, complete, evaluate, reproduce):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyro-vae`` console script and of ``python -m pyro_vae``.

    :param argv: arguments without the program name; ``sys.argv[1:]`` by default.
    :returns: exit status (0 success, 1 training diverged or a failed check, 2 bad input).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"pyro-vae: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an output path under a file, a read-only folder, ...
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
