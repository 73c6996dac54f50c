"""``pyro-vae complete``: several completions Y per condition X from a conditional run.

Writes ``completions_SPLIT_nN.png`` (for a model whose completion is one deterministic
mean: ``completions_SPLIT.png``) into the run folder, or ``--out``: one column per
condition X, rows of ground truth and completions Y, the condition tinted blue.
"""

from __future__ import annotations

import argparse

from pyro_vae import plots
from pyro_vae import run as run_mod
from pyro_vae.cli.options import add_device, add_run, add_seed, wrote
from pyro_vae.errors import UsageError
from pyro_vae.parsing import at_least, path
from pyro_vae.splits import SPLITS

#: more conditions or samples than this make a figure nobody can read
MAX_FIGURE_SIDE = 100


def add_parser(sub) -> None:
    """Register ``complete`` on an ``argparse`` subparsers object."""
    c = sub.add_parser(
        "complete", help="draw several completions Y per condition X from a conditional run"
    )
    add_run(c, "`pyro-vae train --model cvae`")
    c.add_argument(
        "-n", "--num-samples", type=at_least(1), default=5, help="completions (default 5)"
    )
    c.add_argument(
        "--inputs", type=at_least(1), default=8, help="evenly spaced conditions (default 8)"
    )
    c.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    add_seed(c)
    c.add_argument("--out", type=path, help="PNG path (default RUN/completions_SPLIT_nN.png)")
    add_device(c)
    c.set_defaults(func=cmd_complete)


def cmd_complete(args: argparse.Namespace) -> int:
    """``pyro-vae complete``: see ``pyro-vae complete --help``."""
    if max(args.num_samples, args.inputs) > MAX_FIGURE_SIDE:
        raise UsageError(
            f"-n and --inputs must be at most {MAX_FIGURE_SIDE}, got {args.num_samples} "
            f"and {args.inputs}"
        )
    model, dataset, _, folder = run_mod.open_run(args.run, args.device)
    if not model.supports("completions"):
        raise model.unsupported("completions")
    if args.out is not None:  # refused before anything is drawn
        folder.check_output(args.out, ".png")
    drawn = model.completions(dataset, args.split, args.inputs, args.num_samples, args.seed)
    out = folder.check_output(args.out or folder.completions(args.split, drawn.num_samples), ".png")
    plots.save_figure(plots.completions_figure(drawn), out)
    wrote(out)
    return 0
