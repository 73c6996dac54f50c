"""How many latent dimensions? The tutorial's MNIST model degrades below 4 and at very large sizes.

For z_dim in {2, 4, 10, 30, 100, 1000}, the default VAE (mnist5k, dynamic
binarization, Bernoulli, 784-400-z) is trained on the same split and budget. Per
model: the test ELBO and importance-sampled log P(X), the gap between them, the
number of active units (Var over test images of E_q[z_d] > 0.01, Burda et al. 2016),
the units whose KL term averages more than 0.01 nats, the KL term itself, and samples
from the prior. A small z cannot hold a digit's variations; in a large one most units
should carry no information about X (the KL term pulls them to the prior), so the
useful size saturates while the ELBO stays flat or drops.

Usage: ``python experiments/latent_dim.py [--quick] [--out results/latent_dim]``
"""

from __future__ import annotations

import dataclasses
import sys

import common
import torch

from pyro_vae import data as data_mod
from pyro_vae.diagnostics import ACTIVE_UNIT_THRESHOLD, active_units, kl_to_standard_normal
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "How many latent dimensions"
PAGE = "latent_dim.md"
MINUTES = 10
ORDER = 5

Z_DIMS = (2, 4, 10, 30, 100, 1000)
#: a unit "carries information" if its KL term, averaged over test images, exceeds this
KL_UNIT_THRESHOLD = 0.01
QUICK_Z_DIMS = (2, 8)


def main(argv=None) -> dict:
    """Train one VAE per latent size; returns the results written to ``results.json``."""
    args = common.parser("latent_dim", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    rows, sample_rows = [], []
    for z_dim in QUICK_Z_DIMS if args.quick else Z_DIMS:
        b = dataclasses.replace(budget, z_dim=z_dim)
        vae, _, ev, x, seconds = common.train_and_score(dataset, {"name": "bernoulli"}, b)
        s = ev.summary()
        with torch.no_grad():
            loc, scale = vae.encoder(x)  # (N, z_dim) each
        active = active_units(loc).count
        kl_per_unit = kl_to_standard_normal(loc, scale).mean(0)  # (z_dim,): mean over images
        rows.append(
            {
                "z_dim": z_dim,
                "elbo": s["elbo"],
                "log_px": s["log_px"],
                "gap": s["gap"],
                "active_units": active,
                "informative_units": int((kl_per_unit > KL_UNIT_THRESHOLD).sum()),
                "kl": float(kl_per_unit.sum()),
                "kl_per_unit_sorted": kl_per_unit.sort(descending=True).values.tolist(),
                "train_seconds": seconds,
            }
        )
        with torch.no_grad():
            gen = torch.Generator().manual_seed(budget.seed)
            sample_rows.append((f"z_dim {z_dim}", vae.sample(12, generator=gen)))
        print(
            f"z_dim {z_dim}: ELBO {s['elbo']['mean']:.2f}, log P(X) {s['log_px']['mean']:.2f}, "
            f"active {active}",
            flush=True,
        )
    results = {
        "experiment": "latent_dim",
        "budget": {k: v for k, v in budget.to_dict().items() if k != "z_dim"},
        "threshold": ACTIVE_UNIT_THRESHOLD,
        "kl_unit_threshold": KL_UNIT_THRESHOLD,
        "rows": rows,
    }
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "samples.png": labelled_rows_figure(
                sample_rows, dataset.image_shape, "samples from the prior per z_dim"
            ),
            "latent_dim.png": latent_figure(rows),
        },
    )


def latent_figure(rows):
    """ELBO and log P(X) against z_dim (log axis), and active units."""
    from matplotlib.figure import Figure

    z = [r["z_dim"] for r in rows]
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    for key, label in (("elbo", "ELBO"), ("log_px", "log P(X)")):
        left.errorbar(
            z,
            [r[key]["mean"] for r in rows],
            yerr=[r[key]["stderr"] for r in rows],
            marker="o",
            capsize=3,
            label=label,
        )
    left.set_xscale("log")
    left.set_xlabel("z_dim")
    left.set_ylabel("nats per test image")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(
        z, [r["active_units"] for r in rows], marker="o", label="active: Var(E_q[z_d]) > 0.01"
    )
    right.plot(
        z, [r["informative_units"] for r in rows], marker="s", label="KL of the unit > 0.01 nats"
    )
    right.plot(z, [min(v, max(z)) for v in z], linestyle=":", color="grey", label="z_dim")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("z_dim")
    right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    rows = [
        [
            r["z_dim"],
            common.mean_se(r["elbo"]),
            common.mean_se(r["log_px"]),
            common.mean_se(r["gap"]),
            f"{r['kl']:.1f}",
            r["active_units"],
            r["informative_units"],
            f"{r['train_seconds']:.0f}",
        ]
        for r in results["rows"]
    ]
    header = [
        "z_dim",
        "ELBO",
        "log P(X)",
        "gap",
        "KL",
        "active units",
        "informative units",
        "train seconds",
    ]
    return (
        f"\nmnist5k VAE (dynamic binarization, Bernoulli, 784-{b['hidden_dims'][0]}-z, "
        f"{b['epochs']} epochs, seed {b['seed']}), one run per row; {b['test_images']} test "
        f"images, K = {b['num_samples']}; nats per image, mean ± s.e.; active: Var(E_q[z_d]) > "
        f"{results['threshold']}; informative: the unit's KL term averages more than "
        f"{results['kl_unit_threshold']} nats; KL: the whole KL term.\n\n"
        + markdown_table(header, rows)
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
