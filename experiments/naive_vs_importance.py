"""Doersch sections 2 and 2.3: log P(X) with z from the prior against z from Q(z|X).

The naive estimator ``P(X) ~ (1/K) sum_k P(X|z_k)``, ``z_k ~ P(z)``, is unbiased for
P(X), but almost no prior sample explains a given digit, so in log space it stays far
below log P(X) until K is enormous. Importance sampling with the encoder,
``z_k ~ Q(z|X)`` and weights ``P(X, z_k) / Q(z_k|X)``, needs few samples.

For the default VAE (mnist5k, dynamic binarization, Bernoulli, 784-400-20, the
experiment budget) and evenly spaced test images, both estimators are computed for K
from 1 to K_MAX (prefixes of one stream of samples per repeat) in REPEATS independent
repeats. The reference for a repeat is the importance-sampled estimate pooled from the
other repeats' samples of Q: independent of the samples it judges. Reported per K: the
mean over images of estimate minus reference (its spread over repeats), the fraction
of images within 1 nat of the reference, and the smallest K at which each estimator
comes within 1 nat.

Usage: ``python experiments/naive_vs_importance.py [--quick] [--out results/naive_vs_importance]``
"""

from __future__ import annotations

import math
import sys

import common
import pyro
import torch

from pyro_vae import data as data_mod
from pyro_vae.evaluate import log_weights
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Sections 2 and 2.3: log P(X) with z from the prior against z from Q"
PAGE = "naive_vs_importance.md"
MINUTES = 8
ORDER = 3

K_MAX, REPEATS, IMAGES = 100_000, 3, 100
QUICK_K_MAX, QUICK_REPEATS, QUICK_IMAGES = 300, 2, 10
#: "close": an estimate within this many nats of the reference
WITHIN_NATS = 1.0
PROPOSALS = {"prior": "z from the prior P(z) (naive)", "guide": "z from Q(z|X)"}


def sample_sizes(k_max: int) -> list[int]:
    """1, 3, 10, 30, ... up to and including ``k_max``."""
    ks, k = [], 1
    while k < k_max:
        ks += [k, 3 * k] if 3 * k < k_max else [k]
        k *= 10
    return [*ks, k_max]


def prefix_estimates(log_w: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """``log((1/K) sum_{k<K} w_k)`` for every K in ``ks`` from one ``(K_max, N)`` stream.

    :returns: ``(len(ks), N)``.
    """
    cumulative = torch.logcumsumexp(log_w.double(), dim=0)
    index = torch.tensor(ks) - 1
    return (cumulative[index] - torch.tensor(ks, dtype=torch.float64).log().unsqueeze(-1)).float()


def leave_one_out_reference(log_sums: torch.Tensor, k: int) -> torch.Tensor:
    """For each repeat r, ``log((1 / ((R - 1) k)) sum of the weights of the other repeats)``.

    :param log_sums: ``(R, N)``: ``logsumexp`` of each repeat's ``k`` log weights.
    :returns: ``(R, N)``.
    """
    repeats = log_sums.shape[0]
    if repeats < 2:
        raise ValueError("a leave-one-out reference needs at least 2 repeats")
    others = torch.stack(
        [torch.logsumexp(torch.cat([log_sums[:r], log_sums[r + 1 :]]), 0) for r in range(repeats)]
    )
    return (others - math.log((repeats - 1) * k)).float()


def main(argv=None) -> dict:
    """Run both estimators; returns the results written to ``results.json``."""
    args = common.parser("naive_vs_importance", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    k_max = QUICK_K_MAX if args.quick else K_MAX
    repeats = QUICK_REPEATS if args.quick else REPEATS
    n_images = QUICK_IMAGES if args.quick else IMAGES
    if args.num_samples is not None:
        k_max = args.num_samples
    if args.test_images is not None:
        n_images = args.test_images
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    vae, history, seconds = common.train_vae(dataset, {"name": "bernoulli"}, budget)
    x = dataset.x_test[spread_subset(len(dataset.x_test), n_images)]
    ks = sample_sizes(k_max)

    estimates = {name: [] for name in PROPOSALS}  # per repeat: (len(ks), N)
    guide_weights = []
    for r in range(repeats):
        for name in PROPOSALS:
            pyro.set_rng_seed(budget.seed + 1000 * (r + 1) + (name == "guide"))
            guide = vae.guide if name == "guide" else None
            log_w = log_weights(vae.model, guide, x, num_samples=k_max, proposal=name)
            estimates[name].append(prefix_estimates(log_w, ks))
            if name == "guide":
                guide_weights.append(torch.logsumexp(log_w.double(), 0))
        print(f"repeat {r + 1}/{repeats} done", flush=True)
    pooled = torch.stack(guide_weights)  # (repeats, N): logsumexp of each repeat's weights
    reference = leave_one_out_reference(pooled, k_max)  # (repeats, N)

    rows = []
    for i, k in enumerate(ks):
        row = {"k": k}
        for name in PROPOSALS:
            per_repeat = torch.stack([e[i] for e in estimates[name]])  # (repeats, N)
            error = per_repeat - reference
            mean_per_repeat = error.mean(-1)
            row[name] = {
                "mean_minus_reference": float(mean_per_repeat.mean()),
                "min_over_repeats": float(mean_per_repeat.min()),
                "max_over_repeats": float(mean_per_repeat.max()),
                "fraction_within": float((error.abs() < WITHIN_NATS).float().mean()),
            }
        rows.append(row)
    first_within = {
        name: next(
            (r["k"] for r in rows if abs(r[name]["mean_minus_reference"]) < WITHIN_NATS), None
        )
        for name in PROPOSALS
    }
    results = {
        "experiment": "naive_vs_importance",
        "budget": budget.to_dict(),
        "images": len(x),
        "k_max": k_max,
        "repeats": repeats,
        "within_nats": WITHIN_NATS,
        "reference_log_px": float((torch.logsumexp(pooled, 0) - math.log(repeats * k_max)).mean()),
        "reference_samples": (repeats - 1) * k_max,
        "train_seconds": seconds,
        "test_elbo_after_training": history.test_elbo[-1],
        "rows": rows,
        "first_k_within": first_within,
    }
    return common.finish(
        args.out, results, table(results), {"naive_vs_importance.png": estimator_figure(results)}
    )


def estimator_figure(results: dict):
    """Mean estimate minus reference against K, with the spread over repeats."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    ks = [r["k"] for r in results["rows"]]
    for colour, (name, label) in zip(("C3", "C0"), PROPOSALS.items(), strict=True):
        mean = [r[name]["mean_minus_reference"] for r in results["rows"]]
        low = [r[name]["min_over_repeats"] for r in results["rows"]]
        high = [r[name]["max_over_repeats"] for r in results["rows"]]
        ax.plot(ks, mean, marker="o", color=colour, label=label)
        ax.fill_between(ks, low, high, color=colour, alpha=0.2)
    ax.axhline(-results["within_nats"], color="k", linestyle=":", linewidth=0.8)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("K, samples of z per image")
    ax.set_ylabel("estimate - reference log P(X), nats")
    ax.set_title(
        f"log P(X) estimates on {results['images']} test images; band: spread over "
        f"{results['repeats']} repeats\nreference: z from Q, the other repeats' "
        f"{results['reference_samples']:,} samples per image (dotted: 1 nat below)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    rows = []
    for r in results["rows"]:
        cells = [f"{r['k']:,}"]
        for name in PROPOSALS:
            e = r[name]
            cells += [
                f"{e['mean_minus_reference']:.2f} ({e['min_over_repeats']:.2f} to "
                f"{e['max_over_repeats']:.2f})",
                f"{100 * e['fraction_within']:.0f}%",
            ]
        rows.append(cells)
    header = ["K", "z from the prior", "within 1 nat", "z from Q(z|X)", "within 1 nat"]
    never = f"not within {results['k_max']:,}"
    first = {k: never if v is None else f"{v:,}" for k, v in results["first_k_within"].items()}
    return (
        f"\nmnist5k VAE (Bernoulli, 784-{b['hidden_dims'][0]}-{b['z_dim']}, {b['epochs']} "
        f"epochs, seed {b['seed']}); {results['images']} evenly spaced test images; "
        f"{results['repeats']} repeats of K = 1 to {results['k_max']:,}. Reference log P(X): "
        f"{results['reference_log_px']:.2f} nats per image, importance-sampled with Q; each "
        f"repeat is judged against the other repeats' {results['reference_samples']:,} samples "
        "per image. Mean over images of estimate minus "
        "reference (range over repeats), and the share of (image, repeat) pairs within "
        f"{results['within_nats']:g} nat.\n\n"
        + markdown_table(header, rows)
        + f"\nSmallest K whose mean comes within {results['within_nats']:g} nat of the "
        f"reference: z from Q: {first['guide']}; z from the prior: {first['prior']}.\n\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
