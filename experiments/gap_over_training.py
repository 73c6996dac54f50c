"""The ELBO gap over training, for Trace_ELBO and for the IWAE objective.

``log P(X) - ELBO = D[Q(z|X) || P(z|X)]``: training by the ELBO pushes the decoder
towards posteriors that Q can match, so the gap can shrink as training goes on even
though log P(X) rises. The IWAE objective (``RenyiELBO(alpha=0)`` with k particles,
Burda et al. 2016) optimizes the tighter bound L_k, which tolerates a worse Q: its
models reach a higher log P(X) with a wider ELBO gap.

The default VAE (mnist5k, dynamic binarization, Bernoulli, 784-400-20) is trained
once with each objective; after the epochs in CHECKPOINTS the test ELBO, L_50 and
log P(X) (K = 5000) are measured on EVAL_IMAGES evenly spaced test images. The run
is resumed from its checkpoint between measurements, which reproduces an
uninterrupted run exactly.

Usage: ``python experiments/gap_over_training.py [--quick] [--out results/gap_over_training]``
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common
import pyro

from pyro_vae import VAE, Bernoulli, TrainConfig, fit
from pyro_vae import data as data_mod
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.splits import batch_transform, spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "The ELBO gap over training, Trace_ELBO against IWAE"
PAGE = "gap_over_training.md"
MINUTES = 6
ORDER = 7

CHECKPOINTS = (1, 2, 5, 10, 20, 30, 40, 50)
QUICK_CHECKPOINTS = (1, 2)
EVAL_IMAGES = 200
IWAE_PARTICLES = 5
OBJECTIVES = {
    "elbo": {"objective": "elbo", "num_particles": 1},
    "iwae": {"objective": "iwae", "num_particles": IWAE_PARTICLES},
}
BOUND_K = 50


def main(argv=None) -> dict:
    """Train with both objectives; returns the results written to ``results.json``."""
    args = common.parser("gap_over_training", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    checkpoints = list(QUICK_CHECKPOINTS if args.quick else CHECKPOINTS)
    if args.epochs is not None:
        checkpoints = [e for e in checkpoints if e < args.epochs] + [args.epochs]
    n_images = min(budget.test_images, EVAL_IMAGES)
    if args.quick:  # enough samples for L_50, so that the quick run takes every path
        budget.num_samples = max(budget.num_samples, BOUND_K)
    ks = tuple(k for k in (1, BOUND_K) if k <= budget.num_samples)
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    x = dataset.x_test[spread_subset(len(dataset.x_test), n_images)]
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in OBJECTIVES.items():
            pyro.set_rng_seed(budget.seed)
            vae = VAE(
                dataset.x_dim,
                z_dim=budget.z_dim,
                hidden_dims=budget.hidden_dims,
                likelihood=Bernoulli(),
                image_shape=dataset.image_shape,
            )
            path = Path(tmp) / f"{name}.pt"
            rows = []
            for i, epochs in enumerate(checkpoints):
                config = TrainConfig(epochs=epochs, seed=budget.seed, **options)
                fit(
                    vae,
                    dataset.x_train,
                    config=config,
                    batch_transform=batch_transform(dataset),
                    checkpoint=path,
                    resume=i > 0,
                    progress=False,
                )
                vae.eval()
                pyro.set_rng_seed(budget.seed)
                s = evaluate_dataset(
                    vae.model, vae.guide, x, num_samples=budget.num_samples, ks=ks
                ).summary()
                rows.append(
                    {
                        "epoch": epochs,
                        "elbo": s["elbo"],
                        "bound": s.get(f"L_{BOUND_K}"),
                        "log_px": s["log_px"],
                        "gap": s["gap"],
                    }
                )
                print(
                    f"{name}, epoch {epochs}: ELBO {s['elbo']['mean']:.2f}, "
                    f"log P(X) {s['log_px']['mean']:.2f}, gap {s['gap']['mean']:.2f}",
                    flush=True,
                )
            curves[name] = rows
    results = {
        "experiment": "gap_over_training",
        "budget": budget.to_dict(),
        "eval_images": len(x),
        "iwae_particles": IWAE_PARTICLES,
        "bound_k": BOUND_K,
        "curves": curves,
    }
    return common.finish(
        args.out, results, table(results), {"gap_over_training.png": gap_figure(results)}
    )


def gap_figure(results: dict):
    """ELBO, L_50 and log P(X) against epoch per objective, and both gaps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, 3)
    titles = {"elbo": "trained by Trace_ELBO", "iwae": f"trained by IWAE, k = {IWAE_PARTICLES}"}
    for ax, (name, rows) in zip(axes[:2], results["curves"].items(), strict=True):
        epochs = [r["epoch"] for r in rows]
        for key, label in (
            ("elbo", "ELBO"),
            ("bound", f"L_{results['bound_k']}"),
            ("log_px", "log P(X)"),
        ):
            if rows[0][key] is not None:
                ax.plot(epochs, [r[key]["mean"] for r in rows], marker="o", label=label)
        ax.set_title(titles[name], fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per test image")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for name, rows in results["curves"].items():
        axes[2].errorbar(
            [r["epoch"] for r in rows],
            [r["gap"]["mean"] for r in rows],
            yerr=[r["gap"]["stderr"] for r in rows],
            marker="o",
            capsize=3,
            label=titles[name],
        )
    axes[2].set_title("gap log P(X) - ELBO = D[Q(z|X) || P(z|X)]", fontsize=9)
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    rows = []
    for name, curve in results["curves"].items():
        label = "Trace_ELBO" if name == "elbo" else f"IWAE (k = {results['iwae_particles']})"
        rows += [
            [
                label,
                r["epoch"],
                f"{r['elbo']['mean']:.2f}",
                "n/a" if r["bound"] is None else f"{r['bound']['mean']:.2f}",
                f"{r['log_px']['mean']:.2f}",
                common.mean_se(r["gap"]),
            ]
            for r in curve
        ]
    header = ["objective", "epoch", "ELBO", f"L_{results['bound_k']}", "log P(X)", "gap"]
    return (
        f"\nmnist5k VAE (dynamic binarization, Bernoulli, 784-{b['hidden_dims'][0]}-{b['z_dim']}, "
        f"seed {b['seed']}), one run per objective; {results['eval_images']} evenly spaced test "
        f"images, K = {b['num_samples']}; nats per image, mean (gap: ± paired s.e.).\n\n"
        + markdown_table(header, rows)
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
