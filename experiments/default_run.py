"""The README's runs: ``pyro-vae train`` with its defaults, the same with ``--network
conv``, and ``pyro-vae evaluate`` of the first with the gap decomposition.

The commands run as a user types them, each in a process of its own with PyTorch's
default threads (``--threads`` sets this script's, not theirs), so the train and test
ELBO recorded here are what the README's first command prints on the same machine and
library versions, and the seconds are those of the whole command. ``results.json``
holds each run's ``results.json`` and the evaluation's ``eval.json`` summary.

Usage: ``python experiments/default_run.py [--quick] [--out results/default_run]``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common
import torch

from pyro_vae.evaluate import mean_and_stderr
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "The README's runs: pyro-vae train with its defaults, and its evaluation"
PAGE = "evaluation.md"
MINUTES = 9
ORDER = 0

#: what --quick adds to every command: the 8x8 digits, tiny networks, one epoch, few samples
QUICK_TRAIN = ("--dataset", "digits", "--epochs", "1", "--z-dim", "4", "--hidden-dims", "32")
QUICK_EVALUATE = ("--num-samples", "20", "--naive-samples", "20", "--limit", "40")
QUICK_EVALUATE_GAP = ("--gap-points", "10", "--gap-steps", "20")
#: the evaluation of the README: K = 5,000 for both estimates, and the gap decomposition
EVALUATE = ("--num-samples", "5000", "--naive-samples", "5000", "--gap-decomposition")
#: the gap decomposition's rows: log P(X) with Q and with q* as proposal on its points,
#: the ELBO of each, and the two parts of the gap
GAP_ROWS = (
    *("log_px_guide", "log_px", "elbo_amortized", "elbo_optimal"),
    *("approximation_gap", "amortization_gap"),
)


def pyro_vae(*argv: str) -> float:
    """Run ``pyro-vae ARGV`` in a fresh process; its wall seconds.

    :raises SystemExit: with the command's own error output if it fails.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae", *argv], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"`pyro-vae {' '.join(argv)}` failed:\n{done.stderr[-3000:]}")
    return seconds


def main(argv=None) -> dict:
    """Run the three commands; returns the results written to ``results.json``."""
    args = common.parser("default_run", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    quick = QUICK_TRAIN if args.quick else ()
    runs = args.out / "runs"
    results = {"experiment": "default_run", "budget": budget.to_dict(), "runs": {}}
    for network in ("mlp", "conv"):
        folder = runs / network
        options = ("--network", "conv") if network == "conv" else ()
        seconds = pyro_vae("train", *options, *quick, "--out", str(folder), "--overwrite")
        run = json.loads((folder / "results.json").read_text())
        run["command_seconds"] = seconds
        run["parameters"] = _parameters(folder)
        results["runs"][network] = run
        print(f"{network}: test ELBO {run['test_elbo']:.2f} in {seconds:.0f} s", flush=True)
    evaluate = [*EVALUATE, *(QUICK_EVALUATE + QUICK_EVALUATE_GAP if args.quick else ())]
    seconds = pyro_vae("evaluate", "--run", str(runs / "mlp"), *evaluate, "--force")
    report = json.loads((runs / "mlp" / _eval_name(args.quick)).read_text())
    # log P(X) with Q as proposal on the points of the gap decomposition, beside q*'s
    gap = report["gap_decomposition"]
    on_gap_points = spread_subset(report["num_points"], gap["num_points"]).tolist()
    gap["log_px_guide"] = mean_and_stderr(
        torch.tensor([report["per_point"]["log_px"][i] for i in on_gap_points])
    )
    report.pop("per_point")  # per-image values: in the run folder, not published
    report["run"] = "runs/mlp"  # where in this experiment's folder, not on this machine
    results["evaluation"] = {**report, "command_seconds": seconds}
    results["threads"] = os.cpu_count()
    return common.finish(args.out, results, table(results))


def _eval_name(quick: bool) -> str:
    return "eval_n40.json" if quick else "eval.json"


def _parameters(folder: Path) -> int:
    from pyro_vae import open_run

    model, *_ = open_run(folder)
    return sum(p.numel() for p in model.parameters())


def table(results: dict) -> str:
    """The README's tables: train and test ELBO per network, and the evaluation."""
    runs = results["runs"]
    rows = [
        [split, *(f"{runs[n][f'{split}_elbo']:.2f}" for n in ("mlp", "conv"))]
        for split in ("train", "test")
    ]
    rows.append(["seconds", *(f"{runs[n]['command_seconds']:.0f}" for n in ("mlp", "conv"))])
    rows.append(["parameters", *(f"{runs[n]['parameters']:,}" for n in ("mlp", "conv"))])
    summary = results["evaluation"]["summary"]
    names = [k for k in summary if k == "elbo" or k.startswith("L_")] + ["log_px"]
    names += [k for k in ("log_px_prior", "gap") if k in summary]
    evaluation = [[n, common.mean_se(summary[n])] for n in names]
    gap = results["evaluation"]["gap_decomposition"]
    evaluation += [[f"{n} ({gap['num_points']} points)", common.mean_se(gap[n])] for n in GAP_ROWS]
    return (
        markdown_table(["split", "ELBO, MLP", "ELBO, conv"], rows)
        + "\n"
        + markdown_table(["estimate", "nats per test image"], evaluation)
    )


if __name__ == "__main__":
    main()
