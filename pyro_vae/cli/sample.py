"""``pyro-vae sample``: a grid of images decoded from the prior of a trained model."""

from __future__ import annotations

import argparse

import torch

from pyro_vae import plots
from pyro_vae import run as run_mod
from pyro_vae.cli.options import add_device, add_force, add_run, add_seed, writing_output, wrote
from pyro_vae.devices import resolve_device
from pyro_vae.errors import UsageError
from pyro_vae.parsing import at_least, path

#: more samples than this make a grid nobody can read (and may not fit in memory)
MAX_SAMPLES = 10_000


def add_parser(sub) -> None:
    """Register ``sample`` on an ``argparse`` subparsers object."""
    s = sub.add_parser("sample", help="draw images from a trained model's prior")
    add_run(s)
    s.add_argument(
        "-n",
        "--num-samples",
        type=at_least(1),
        default=64,
        help=f"number of samples, at most {MAX_SAMPLES} (default 64)",
    )
    add_seed(s)
    s.add_argument("--out", type=path, help="PNG path (default RUN/prior_samples_N.png)")
    add_force(s, "picture")
    add_device(s)
    s.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    """``pyro-vae sample``: see ``pyro-vae sample --help``."""
    if args.num_samples > MAX_SAMPLES:
        raise UsageError(f"-n must be at most {MAX_SAMPLES}, got {args.num_samples}")
    # the prior needs no data: the data set is not loaded (nor downloaded)
    model = run_mod.load_model(args.run, args.device)
    folder = run_mod.RunFolder(args.run)
    out = folder.check_output(args.out or folder.prior_samples(args.num_samples), ".png")
    if not model.supports("sample"):
        raise model.unsupported("sample")
    if model.image_shape is None:
        raise UsageError(f"the model in {args.run} was not trained on images; nothing to draw")
    with writing_output(folder, out, "pyro-vae sample", args.force):
        gen = torch.Generator(device=resolve_device(args.device)).manual_seed(args.seed)
        samples = model.sample(args.num_samples, generator=gen)
        title = f"{args.num_samples} samples from the prior (seed {args.seed})"
        grid = plots.grid_figure(samples, model.image_shape, title, model.sample_columns)
        plots.save_figure(grid, out)
    wrote(out)
    return 0
