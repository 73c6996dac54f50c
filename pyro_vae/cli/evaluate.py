"""``pyro-vae evaluate``: log P(X), IWAE bounds and the ELBO gap of a trained run.

Writes ``eval.json`` (summary and per-point values), ``eval.md`` (the table it
prints) and ``bounds.png`` into the run folder (``eval_train.*`` and
``bounds_train.png`` for ``--split train``).

For a CVAE run the same quantities are conditional: log P(Y|X) with z from
Q(z|X,Y) and from the prior P(z|X), the IWAE bounds, and the 10-particle negative
ELBO that Pyro's CVAE tutorial reports. A regressor has no latent variable: its
log P(Y|X) is exact, and no sampling takes place.
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
from typing import Any

import pyro

from pyro_vae.cvae import CVAE, Regressor
from pyro_vae.errors import UsageError
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr, mean_elbo
from pyro_vae.gaps import decompose_gap
from pyro_vae.io import write_json, write_text
from pyro_vae.runs import (
    SPLITS,
    comparable_bits_per_dim,
    evaluation_split,
    load_run,
    resolve_device,
    run_dataset,
    spread_subset,
)

DEFAULT_KS = (1, 5, 50, 500)
#: particles of the negative ELBO that Pyro's CVAE tutorial reports as its metric
TUTORIAL_ELBO_PARTICLES = 10


def add_evaluate_parser(sub) -> None:
    """Register the ``evaluate`` subcommand on an ``argparse`` subparsers object."""
    e = sub.add_parser("evaluate", help="importance-sampled log P(X), IWAE bounds and ELBO gap")
    e.add_argument("--run", type=Path, required=True, help="run folder written by `pyro-vae train`")
    e.add_argument("--num-samples", type=int, default=5000, help="K per data point (default 5000)")
    e.add_argument("--ks", type=_ks, help="IWAE group sizes (default: those of 1,5,50,500 up to K)")
    e.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    e.add_argument("--limit", type=int, help="evaluate N evenly spaced points of the split")
    e.add_argument("--batch-size", type=int, default=100, help="data points per pass (default 100)")
    e.add_argument("--seed", type=int, default=0, help="(default 0)")
    e.add_argument(
        "--gap-decomposition",
        action="store_true",
        help="fit q*(z) per point and split the gap into approximation and amortization",
    )
    e.add_argument(
        "--gap-points", type=int, default=100, help="points for the gap decomposition (default 100)"
    )
    e.add_argument("--gap-steps", type=int, default=500, help="SVI steps per q* (default 500)")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    e.add_argument("--no-progress", action="store_true", help="hide progress bars")
    e.set_defaults(func=cmd_evaluate)


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive group sizes, got {text!r}")
    return ks


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``pyro-vae evaluate``: see ``pyro-vae evaluate --help``."""
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.ks is None:
        args.ks = tuple(k for k in DEFAULT_KS if k <= args.num_samples)
    if max(args.ks) > args.num_samples:
        raise UsageError(f"--ks {max(args.ks)} exceeds --num-samples {args.num_samples}")
    if args.batch_size < 1 or args.gap_points < 1 or args.gap_steps < 0:
        raise UsageError("--batch-size and --gap-points must be at least 1, --gap-steps at least 0")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be in [0, 2**32), got {args.seed}")
    device = resolve_device(args.device)
    vae, state = load_run(args.run, device)
    config = state["config"]
    dataset = run_dataset(config, str(args.run / "checkpoint.pt")).to(device)
    conditional = isinstance(vae, (CVAE, Regressor))
    if conditional and args.gap_decomposition:
        raise UsageError(
            "--gap-decomposition fits q*(z|X) per image of a VAE; it does not support the "
            f"conditional model in {args.run}. Drop --gap-decomposition"
        )
    if conditional:
        from pyro_vae.tasks import pairs, task_for

        data = pairs(task_for(config["data"]["task"], dataset), dataset, args.split)
    else:
        data = (evaluation_split(dataset, args.split),)
    subset = spread_subset(len(data[0]), args.limit).to(device)
    data = tuple(t[subset] for t in data)
    x = data[0]
    suffix = "" if args.split == "test" else f"_{args.split}"
    suffix += f"_n{len(x)}" if args.limit else ""  # a subset never replaces a full report
    if isinstance(vae, Regressor):
        return _evaluate_regressor(args, config, vae, dataset, data, suffix)
    progress = not args.no_progress

    pyro.set_rng_seed(args.seed)
    ks = tuple(args.ks) if 1 in args.ks else (1, *args.ks)
    guided = evaluate_dataset(
        vae.model,
        vae.guide,
        data,
        num_samples=args.num_samples,
        ks=ks,
        batch_size=args.batch_size,
        progress=progress,
    )
    naive = evaluate_dataset(
        vae.model,
        None,
        data,
        num_samples=args.num_samples,
        ks=(1,),
        proposal="prior",
        batch_size=args.batch_size,
        progress=progress,
    )
    gaps = None
    if args.gap_decomposition:
        subset = spread_subset(len(x), args.gap_points).to(device)
        gaps = decompose_gap(vae, x[subset], steps=args.gap_steps, num_samples=args.num_samples)

    report = build_report(args, config, guided, naive, gaps, len(x))
    report["bits_per_dim"] = {
        name: comparable_bits_per_dim(vae, dataset, report["summary"][name]["mean"])
        for name in ("elbo", "log_px", "log_px_prior")
    }
    if conditional:
        report["task"] = config["data"]["task"]
        report["target"] = "Y|X"
        pyro.set_rng_seed(args.seed)
        report["negative_elbo_10_particles"] = -mean_elbo(
            vae.model,
            vae.guide,
            data,
            num_particles=TUTORIAL_ELBO_PARTICLES,
            batch_size=args.batch_size,
        )
    table = report_table(report)
    write_json(args.run / f"eval{suffix}.json", report)
    write_text(args.run / f"eval{suffix}.md", table)
    from pyro_vae import plots

    plots.save_figure(plots.bounds_figure(report), args.run / f"bounds{suffix}.png")
    print(table, end="")
    for line in report["order_violations"]:
        print(f"pyro-vae: error: {line}")
    if report["order_violations"]:
        return 1
    print(f"pyro-vae: wrote {args.run}/eval{suffix}.json, eval{suffix}.md, bounds{suffix}.png")
    return 0


def _evaluate_regressor(args, config, model, dataset, data, suffix: str) -> int:
    """The exact log P(Y|X) of a regressor run: no latent variable, nothing to sample."""
    log_p = model.log_likelihood(*data).cpu()
    summary = mean_and_stderr(log_p)
    report = {
        "run": str(args.run),
        "model": "regressor",
        "target": "Y|X",
        "task": config["data"]["task"],
        "dataset": config["data"]["dataset"],
        "split": args.split,
        "binarize": config["data"]["binarize"],
        "dequantized": config["data"].get("dequantize", False),
        "likelihood": config["model"]["likelihood"],
        "num_points": len(log_p),
        "exact": True,
        "unit": "nats per image",
        "summary": {"log_px": summary},
        "bits_per_dim": {"log_px": comparable_bits_per_dim(model, dataset, summary["mean"])},
        "per_point": {"log_px": log_p.tolist()},
    }
    bits = report["bits_per_dim"]["log_px"]
    table = (
        f"\n{report['dataset']}, {args.split} split ({len(log_p)} images, "
        f"binarize={report['binarize']}), regressor on task {report['task']}: "
        "no latent variable, so log P(Y|X) is exact; nats per image, standard errors over "
        "images\n\n| quantity | mean | std. error |\n|---|---|---|\n"
        f"| log P(Y\\|X), exact | {summary['mean']:.2f} | {summary['stderr']:.2f} |\n"
        + (
            f"\nIn bits per dimension of Y: {bits:.4f}"
            + (" (an upper bound, from one dequantization)" if report["dequantized"] else "")
            + "\n"
            if bits is not None
            else ""
        )
        + "\n"
    )
    write_json(args.run / f"eval{suffix}.json", report)
    write_text(args.run / f"eval{suffix}.md", table)
    print(table, end="")
    print(f"pyro-vae: wrote {args.run}/eval{suffix}.json, eval{suffix}.md")
    return 0


def build_report(args, config, guided, naive, gaps, num_points: int) -> dict[str, Any]:
    """Plain-data report: settings, summary rows, the ordering check and per-point values."""
    summary = guided.summary()
    summary["log_px_prior"] = mean_and_stderr(naive.log_px)
    summary["ess_prior"] = {**mean_and_stderr(naive.ess), "min": float(naive.ess.min())}
    chain = ["elbo", *[f"L_{k}" for k in guided.ks if k > 1], "log_px"]
    rows = {"elbo": guided.elbo, "log_px": guided.log_px}
    rows.update({f"L_{k}": b for k, b in zip(guided.ks, guided.bounds, strict=True)})
    # With shared samples and k dividing k', Jensen's inequality inside each group
    # makes L_k <= L_k' hold for every image, whatever the weights: a step down can
    # only come from a bug in the accumulation. Pairs that do not nest are noisy
    # and are not checked.
    sizes = {"elbo": 1, "log_px": guided.num_samples, **{f"L_{k}": k for k in guided.ks}}
    violations = []
    for lower, upper in itertools.combinations(chain, 2):
        k, k_next = sizes[lower], sizes[upper]
        if k_next % k or guided.num_samples % k_next:
            continue
        worst = float((rows[upper] - rows[lower]).min())
        if worst < -1e-4 * (1 + float(rows[lower].abs().max())):
            violations.append(
                f"{upper} is below {lower} by {-worst:.4g} nats for some image, which nested "
                "groups of shared samples rule out: a bug in the estimator"
            )
    report = {
        "run": str(args.run),
        "dataset": config["data"]["dataset"],
        "split": args.split,
        "binarize": config["data"]["binarize"],
        "dequantized": config["data"].get("dequantize", False),
        "likelihood": config["model"]["likelihood"],
        "num_points": num_points,
        "num_samples": guided.num_samples,
        "ks": list(guided.ks),
        "seed": args.seed,
        "repeats": 1,
        "unit": "nats per image",
        "summary": summary,
        # paired with the ELBO, per image: the uncertainty of the rise itself
        "minus_elbo": {name: mean_and_stderr(rows[name] - rows["elbo"]) for name in chain[1:]},
        "order_violations": violations,
        "per_point": {
            name: values.tolist()
            for name, values in {**rows, "ess": guided.ess, "log_px_prior": naive.log_px}.items()
        },
    }
    if gaps is not None:
        report["gap_decomposition"] = {
            "num_points": len(gaps.log_px),
            "steps": gaps.steps,
            "num_samples": gaps.num_samples,
            **{
                name: mean_and_stderr(getattr(gaps, name))
                for name in (
                    "log_px",
                    "elbo_amortized",
                    "elbo_optimal",
                    "approximation_gap",
                    "amortization_gap",
                )
            },
        }
    return report


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell, where a bare ``|`` would start a new cell."""
    return text.replace("|", "\\|")


def report_table(r: dict[str, Any]) -> str:
    """The Markdown table that ``evaluate`` prints and writes to ``eval.md``."""
    s = r["summary"]
    k_max = r["num_samples"]
    conditional = r.get("target") == "Y|X"
    p, q, prior = ("P(Y|X)", "Q(z|X,Y)", "P(z|X)") if conditional else ("P(X)", "Q(z|X)", "P(z)")
    posterior = "P(z|X,Y)" if conditional else "P(z|X)"

    def row(label, key):
        return f"| {_cell(label)} | {s[key]['mean']:.2f} | {s[key]['stderr']:.2f} |\n"

    model = f"CVAE on task {r['task']}; " if conditional else ""
    lines = [
        f"\n{model}{r['dataset']}, {r['split']} split ({r['num_points']} images, "
        f"binarize={r['binarize']}), "
        f"K = {k_max} importance samples per image, seed {r['seed']}, one run; "
        "nats per image, standard errors over images\n\n",
        "| quantity | mean | std. error |\n|---|---|---|\n",
        row("ELBO (= L_1)", "elbo"),
        *[row(f"L_{k} (IWAE bound, {k_max // k} groups)", f"L_{k}") for k in r["ks"] if k > 1],
        row(f"log {p}, z from {q} (K = {k_max})", "log_px"),
        row(f"log {p}, z from the prior {prior} (K = {k_max})", "log_px_prior"),
        row(f"gap log {p} - ELBO, estimates D[{q} || {posterior}]", "gap"),
        f"\nEffective sample size of the K = {k_max} importance weights per image:\n\n",
        "| z drawn from | mean ESS | min ESS |\n|---|---|---|\n",
        f"| {_cell(q)} | {s['ess']['mean']:.2f} | {s['ess']['min']:.2f} |\n",
        f"| the prior {_cell(prior)} | {s['ess_prior']['mean']:.2f} "
        f"| {s['ess_prior']['min']:.2f} |\n",
    ]
    if conditional:
        lines.append(
            f"\nPyro's CVAE tutorial reports the negative ELBO with {TUTORIAL_ELBO_PARTICLES} "
            f"particles, an upper bound on -log {p}: {r['negative_elbo_10_particles']:.2f} "
            "nats per image (fresh samples of z; compare with minus the ELBO above).\n"
        )
    bits = r.get("bits_per_dim") or {}
    if bits.get("log_px") is not None:
        data = "binarized images" if r["binarize"] != "none" else "the original grey levels"
        if conditional:
            data = f"Y ({data})"
        lines.append(
            f"\nIn bits per dimension of {data}: log {p} {bits['log_px']:.4f}, "
            f"ELBO {bits['elbo']:.4f} (lower is better; "
            + (
                "continuous density on dequantized pixels"
                if r.get("dequantized")
                else "discrete likelihood"
            )
            + ")\n"
        )
    g = r.get("gap_decomposition")
    if g:
        lines += [
            f"\nGap decomposition (Cremer et al. 2018) on {g['num_points']} of these images; "
            f"q*(z) fitted per image by {g['steps']} SVI steps from the encoder's output; "
            "log P(X) importance-sampled with q*:\n\n",
            "| quantity | mean | std. error |\n|---|---|---|\n",
            *[
                f"| {label} | {g[key]['mean']:.2f} | {g[key]['stderr']:.2f} |\n"
                for label, key in (
                    ("log P(X)", "log_px"),
                    ("ELBO of the encoder's q", "elbo_amortized"),
                    ("ELBO of the per-image optimum q*", "elbo_optimal"),
                    ("approximation gap log P(X) - ELBO[q*]", "approximation_gap"),
                    ("amortization gap ELBO[q*] - ELBO[q]", "amortization_gap"),
                )
            ],
        ]
    if not math.isfinite(s["log_px_prior"]["mean"]):
        lines.append("\nThe naive estimate is -inf: no prior sample explained some image at all.\n")
    return "".join(lines) + "\n"
