"""The conditional models on the command line: ``pyro-vae train --model cvae|regressor
--task ...`` builds them here, and ``pyro-vae complete`` draws their completions.

``complete`` writes ``completions_SPLIT_nN.png`` (a regressor's: ``completions_SPLIT.png``)
into the run folder (or ``--out``):
one column per condition X, rows of ground truth and completions Y, the condition
tinted blue.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyro_vae import data as data_mod
from pyro_vae.cvae import CVAE, Regressor
from pyro_vae.errors import UsageError
from pyro_vae.likelihoods import Likelihood
from pyro_vae.runs import SPLITS, load_run, resolve_device, run_dataset, spread_subset
from pyro_vae.tasks import ConditionalData, conditional_data, pairs, task_for


def build_conditional(
    options: dict[str, Any], dataset: data_mod.Dataset, likelihood: Likelihood
) -> tuple[CVAE | Regressor, ConditionalData]:
    """The untrained model and the ``(X, Y)`` data that ``pyro-vae train --model`` asks for.

    :param dict options: resolved ``train`` options (``model``, ``task``, ``prior``,
        ``z_dim``, ``hidden_dims``).
    :raises UsageError: for a task the data set cannot serve.
    """
    cond = conditional_data(options["task"], dataset)
    task = cond.task
    if options["model"] == "regressor":
        model = Regressor(
            task.x_dim, task.y_dim, hidden_dims=options["hidden_dims"], likelihood=likelihood
        )
    else:
        model = CVAE(
            task.x_dim,
            task.y_dim,
            z_dim=options["z_dim"],
            hidden_dims=options["hidden_dims"],
            likelihood=likelihood,
            prior=options["prior"],
        )
    return model, cond


@torch.no_grad()
def completion_rows(
    model: CVAE | Regressor,
    data: tuple[torch.Tensor, torch.Tensor],
    num_inputs: int,
    num_samples: int,
    seed: int,
):
    """Conditions and labelled rows for :func:`pyro_vae.plots.completion_figure`.

    :param data: ``(X, Y)`` pairs; ``num_inputs`` evenly spaced ones are shown.
    :returns: ``(x, rows)``: the ground truth, then the regressor's mean or
        ``num_samples`` CVAE completions (means of ``P(Y|z, X)``, ``z ~ P(z|X)``).
    """
    x, y = data
    idx = spread_subset(len(x), num_inputs).to(x.device)
    x, y = x[idx], y[idx]
    rows = [("ground truth", y)]
    if isinstance(model, Regressor):
        rows.append(("regressor mean", model.predict(x)))
    else:
        torch.manual_seed(seed)
        completions = model.complete(x, num_samples=num_samples)
        rows += [(f"completion {i + 1}", c) for i, c in enumerate(completions)]
    return x, rows


def add_complete_parser(sub) -> None:
    """Register the ``complete`` subcommand on an ``argparse`` subparsers object."""
    c = sub.add_parser(
        "complete", help="draw several completions Y per condition X from a conditional run"
    )
    c.add_argument(
        "--run", type=Path, required=True, help="run folder of `pyro-vae train --model cvae`"
    )
    c.add_argument(
        "-n", "--num-samples", type=int, default=5, help="completions per condition (default 5)"
    )
    c.add_argument(
        "--inputs", type=int, default=8, help="evenly spaced conditions to show (default 8)"
    )
    c.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    c.add_argument("--seed", type=int, default=0, help="(default 0)")
    c.add_argument("--out", type=Path, help="PNG path (default RUN/completions_SPLIT_nN.png)")
    c.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    c.set_defaults(func=cmd_complete)


def cmd_complete(args: argparse.Namespace) -> int:
    """``pyro-vae complete``: see ``pyro-vae complete --help``."""
    from pyro_vae import plots

    if args.num_samples < 1 or args.inputs < 1:
        raise UsageError(
            f"-n and --inputs must be at least 1, got {args.num_samples} and {args.inputs}"
        )
    device = resolve_device(args.device)
    model, state = load_run(args.run, device)
    if not isinstance(model, (CVAE, Regressor)):
        raise UsageError(
            f"{args.run} holds a VAE, which has no condition to complete; train one with "
            "`pyro-vae train --model cvae --task TASK`, or draw from the VAE with "
            "`pyro-vae sample`"
        )
    config = state["config"]
    dataset = run_dataset(config, str(args.run / "checkpoint.pt")).to(device)
    task = task_for(config["data"]["task"], dataset)
    x, rows = completion_rows(
        model, pairs(task, dataset, args.split), args.inputs, args.num_samples, args.seed
    )
    # a regressor has one output per condition, whatever -n says
    n = "" if isinstance(model, Regressor) else f"_n{args.num_samples}"
    out = args.out or args.run / f"completions_{args.split}{n}.png"
    plots.save_figure(plots.completion_figure(task, x, rows), out)
    print(f"pyro-vae: wrote {out}")
    return 0
