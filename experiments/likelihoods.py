"""Every likelihood on the same mnist5k split and budget, compared in one unit.

Each model is trained with the same encoder, decoder, optimizer and number of
epochs. Its test ELBO and importance-sampled log P(X) are then reported in nats
per image and in bits per dimension of the original 8-bit pixels: discrete
likelihoods directly, continuous densities on uniformly dequantized pixels
(``pyro_vae.units``). The Bernoulli model sees binarized images, a different data
set, and is reported on its own. One figure shows prior samples per likelihood.

Usage: ``python experiments/likelihoods.py [--quick] [--out results/likelihoods]``
"""

from __future__ import annotations

import sys

import common
import torch

from pyro_vae import data as data_mod
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Swapping the likelihood"
PAGE = "likelihoods.md"
MINUTES = 18
ORDER = 10

#: (label, likelihood constructor arguments, data options)
MODELS = [
    ("continuous Bernoulli", {"name": "continuous-bernoulli"}, {"dequantize": True}),
    ("Gaussian, sigma 0.1", {"name": "gaussian", "sigma": 0.1}, {"dequantize": True}),
    (
        "Gaussian, learned per-pixel sigma",
        {"name": "gaussian", "sigma": "per-pixel"},
        {"dequantize": True},
    ),
    ("Gaussian, predicted sigma", {"name": "gaussian", "sigma": "predicted"}, {"dequantize": True}),
    (
        "Laplace, learned per-pixel scale",
        {"name": "laplace", "scale": "per-pixel"},
        {"dequantize": True},
    ),
    ("Beta", {"name": "beta"}, {"dequantize": True}),
    ("discretized logistic", {"name": "discretized-logistic", "levels": 256}, {}),
    ("Bernoulli (binarized images)", {"name": "bernoulli"}, {"binarize": "dynamic"}),
]


def main(argv=None) -> dict:
    """Run the comparison; returns the results written to ``results.json``."""
    args = common.parser("likelihoods", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    rows, sample_rows = [], []
    for label, likelihood, data_options in MODELS:
        dataset = data_mod.load("mnist5k", **data_options)
        vae, _, ev, _, seconds = common.train_and_score(dataset, likelihood, budget)
        s = ev.summary()
        rows.append(
            {
                "model": label,
                "likelihood": vae.likelihood.config(),
                "data": "binarized" if dataset.binarize != "none" else "8-bit grey levels",
                "dequantized": dataset.dequantized,
                "test_elbo": s["elbo"],
                "log_px": s["log_px"],
                "bits_per_dim_log_px": common.bits(vae, dataset, s["log_px"]["mean"]),
                "bits_per_dim_elbo": common.bits(vae, dataset, s["elbo"]["mean"]),
                "ess_mean": s["ess"]["mean"],
                "train_seconds": seconds,
            }
        )
        gen = torch.Generator().manual_seed(budget.seed)
        sample_rows.append((label, vae.sample(10, generator=gen)))
        print(
            f"{label}: log P(X) {s['log_px']['mean']:.2f} nats, "
            f"{common.fmt(rows[-1]['bits_per_dim_log_px'], 4)} bits/dim",
            flush=True,
        )

    results = {
        "experiment": "likelihoods",
        "dataset": "mnist5k",
        "budget": budget.to_dict(),
        "models": rows,
    }
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "samples.png": labelled_rows_figure(
                sample_rows, (28, 28), "10 samples from the prior per likelihood (mean of P(x|z))"
            )
        },
    )


def table(results: dict) -> str:
    b = results["budget"]
    head = (
        f"\nmnist5k test split: {b['test_images']} images, K = {b['num_samples']} importance "
        f"samples per image; {b['epochs']} epochs, z_dim {b['z_dim']}, hidden {b['hidden_dims']}, "
        f"seed {b['seed']}, one run. Nats per image (mean ± s.e. over images); bits per "
        "dimension of the 8-bit pixels (continuous densities on dequantized pixels).\n\n"
    )
    header = ["model", "test ELBO", "log P(X)", "bits/dim (log P(X))", "bits/dim (ELBO)", "train s"]
    lines = [head]
    for data in ("8-bit grey levels", "binarized"):
        group = [r for r in results["models"] if r["data"] == data]
        if not group:
            continue
        rows = [
            [
                r["model"],
                common.mean_se(r["test_elbo"], 1),
                common.mean_se(r["log_px"], 1),
                common.fmt(r["bits_per_dim_log_px"], 3),
                common.fmt(r["bits_per_dim_elbo"], 3),
                f"{r['train_seconds']:.0f}",
            ]
            for r in group
        ]
        lines += [f"**{data}**\n\n", markdown_table(header, rows), "\n"]
    return "".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
