"""What every benchmark keeps: its result as JSON and its tables as Markdown.

``--out FILE.json`` (every script in ``benchmarks/`` has it) writes the result that the
script prints last, with the command, the date and the machine, to ``FILE.json``, and
the tables it prints to ``FILE.md`` beside it, both atomically: an interrupted run leaves
the previous files as they were. The pages of the documentation take their speed
numbers from the committed files in ``benchmarks/results/`` (``python -m
pyro_vae.cli.published`` checks them), which ``python benchmarks/publish.py`` writes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

import pyro
import torch

from pyro_vae.io import write_json, write_text


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--out FILE.json`` to a benchmark's command line.

    :param parser: the benchmark's parser.
    """
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE.json",
        help="also write the result to FILE.json and its tables to FILE.md (atomically)",
    )


def check_out(parser: argparse.ArgumentParser, out: Path | None) -> None:
    """Refuse a ``--out`` that cannot be written before any time is spent measuring.

    :param parser: the benchmark's parser, whose ``error`` exits with status 2.
    :param out: the ``--out`` argument, or ``None``.
    """
    if out is None:
        return
    if out.suffix != ".json":
        parser.error(f"--out {out}: give a file name ending in .json (the tables go to .md)")
    if not out.parent.is_dir():
        parser.error(f"--out {out}: the folder {out.parent} does not exist; create it first")


def cpu_model() -> str:
    """The processor's name as Linux reports it (``platform.processor()`` elsewhere).

    :returns: e.g. ``"Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"``.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(script: str, argv: list[str] | None) -> dict:
    """Where and how a result was measured.

    :param script: the benchmark's file name, e.g. ``"train_step.py"``.
    :param argv: the arguments it was given (``None``: ``sys.argv[1:]``).
    :returns: the command, the UTC date, the CPU, its core count and the versions.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": shlex.join(["python", f"benchmarks/{script}", *args]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "versions": {
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "python": platform.python_version(),
        },
    }


def save(
    out: Path | None,
    script: str,
    argv: list[str] | None,
    result: dict,
    tables: list[tuple[str, str]],
) -> None:
    """Write ``result`` to ``out`` and its tables to ``out`` with the suffix ``.md``.

    :param out: the ``--out`` argument; ``None`` writes nothing.
    :param script: the benchmark's file name.
    :param argv: the arguments it was given.
    :param result: what the benchmark printed last; the environment is added under
        ``"measured"``.
    :param tables: ``(caption, Markdown table)`` pairs, in the order they are printed.
    """
    if out is None:
        return
    measured = environment(script, argv)
    write_json(out, {**result, "measured": measured})
    v = measured["versions"]
    lines = [
        f"# benchmarks/{script}",
        "",
        f"`{measured['command']}`, on {measured['date']}: {measured['cpu']}, "
        f"{measured['cores']} cores; torch {v['torch']}, Pyro {v['pyro']}, "
        f"Python {v['python']}.",
    ]
    for caption, table in tables:
        lines += ["", caption, "", table.rstrip("\n")]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
