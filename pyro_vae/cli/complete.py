"""``pyro-vae complete``: several completions Y per condition X from a conditional run.

Writes ``completions_SPLIT_nN.png`` (for a model whose completion is one deterministic
mean: ``completions_SPLIT.png``) into the run folder, or ``--out``: one column per
condition X, rows of ground truth and completions Y, the condition tinted blue.
"""

from __future__ import annotations

import argparse

from pyro_vae import plots
from pyro_vae import run as run_mod
from pyro_vae.cli.options import (
    add_device,
    add_force,
    add_run,
    add_seed,
    check_new,
    writing_output,
    wrote,
)
from pyro_vae.errors import UsageError
from pyro_vae.parsing import at_least, path
from pyro_vae.splits import SPLITS

#: more conditions or samples than this make a figure nobody can read
MAX_FIGURE_SIDE = 100
#: completions per condition, and conditions (at most those of the split), unless ``-n``
#: and ``--inputs`` say otherwise
DEFAULT_NUM_SAMPLES = 5
DEFAULT_INPUTS = 8


def add_parser(sub) -> None:
    """Register ``complete`` on an ``argparse`` subparsers object."""
    c = sub.add_parser(
        "complete", help="draw several completions Y per condition X from a conditional run"
    )
    add_run(c, "`pyro-vae train --model cvae`")
    c.add_argument(
        "-n",
        "--num-samples",
        type=at_least(1),
        help=f"completions per condition, at most {MAX_FIGURE_SIDE}; not for a model whose "
        f"completion is one deterministic mean (default {DEFAULT_NUM_SAMPLES})",
    )
    c.add_argument(
        "--inputs",
        type=at_least(1),
        help=f"evenly spaced conditions, at most {MAX_FIGURE_SIDE} and at most those of the "
        f"split (default {DEFAULT_INPUTS} or all, whichever is fewer)",
    )
    c.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    add_seed(c)
    c.add_argument("--out", type=path, help="PNG path (default RUN/completions_SPLIT_nN.png)")
    add_force(c, "picture")
    add_device(c)
    c.set_defaults(func=cmd_complete)


def cmd_complete(args: argparse.Namespace) -> int:
    """``pyro-vae complete``: see ``pyro-vae complete --help``."""
    given_n = args.num_samples is not None
    num_samples = args.num_samples if given_n else DEFAULT_NUM_SAMPLES
    inputs = args.inputs or DEFAULT_INPUTS
    if max(num_samples, inputs) > MAX_FIGURE_SIDE:
        raise UsageError(
            f"-n and --inputs must be at most {MAX_FIGURE_SIDE}, got {num_samples} and {inputs}"
        )
    model, dataset, _, folder = run_mod.open_run(args.run, args.device)
    if not model.supports("completions"):
        raise model.unsupported("completions")
    if given_n and not getattr(model, "random_completions", True):
        raise UsageError(
            f"-n: the completion of the {model.describe()} in {args.run} is one "
            "deterministic mean, not a draw to repeat; drop -n"
        )
    points = len(model.evaluation_data(dataset, args.split)[0])
    if args.inputs is not None and inputs > points:  # the default 8 takes what there is
        raise UsageError(
            f"--inputs {inputs} exceeds the {points} conditions of the {args.split} split; "
            "ask for fewer"
        )
    if args.out is not None:  # refused before anything is drawn
        folder.check_output(args.out, ".png")
        check_new([args.out], args.force)
    drawn = model.completions(dataset, args.split, inputs, num_samples, args.seed)
    out = folder.check_output(args.out or folder.completions(args.split, drawn.num_samples), ".png")
    with writing_output(folder, out, "pyro-vae complete", args.force):
        plots.save_figure(plots.completions_figure(drawn), out)
    wrote(out)
    return 0
