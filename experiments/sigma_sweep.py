"""Doersch section 2.4.3: the Gaussian's sigma is the VAE's regularization knob.

``-log P(x|z) = ||x - f(z)||^2 / (2 sigma^2) + D log(sigma sqrt(2 pi))``: a small
sigma makes reconstruction error expensive relative to the KL term, a large one
makes it cheap. For sigma in {0.03, 0.1, 0.2, 0.5, 1.0} and a learned sigma, on
the same dequantized mnist5k data and budget, this reports per test image the
squared reconstruction error ``||x - f(E_q[z])||^2``, the KL term
``D[Q(z|x) || P(z)]``, the number of active latent units (variance over test
images of ``E_q[z_d]`` above 0.01, Burda et al. 2016), the ELBO and the
importance-sampled log P(X) (nats and bits per dimension), with reconstructions
and prior samples per sigma.

Usage: ``python experiments/sigma_sweep.py [--quick] [--out results/sigma_sweep]``
"""

from __future__ import annotations

import sys

import common
import torch

from pyro_vae import data as data_mod
from pyro_vae.diagnostics import active_units, kl_to_standard_normal
from pyro_vae.evaluate import mean_and_stderr
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Section 2.4.3: the Gaussian's sigma as regularizer"
PAGE = "sigma_sweep.md"
MINUTES = 15
ORDER = 9

SIGMAS = [0.03, 0.1, 0.2, 0.5, 1.0, "shared"]


@torch.no_grad()
def diagnostics(vae, x: torch.Tensor) -> dict:
    """Reconstruction error, analytic KL and active units on images ``x``."""
    loc, scale = vae.encoder(x)
    recon = vae.likelihood.mean(vae.decoder(loc))
    sq_error = ((x - recon) ** 2).sum(-1)
    kl = kl_to_standard_normal(loc, scale).sum(-1)  # (N,): the KL term per image
    active = active_units(loc)
    return {
        "reconstruction_sq_error": mean_and_stderr(sq_error),
        "kl": mean_and_stderr(kl),
        "active_units": active.count,
        "unit_activity": active.activity.tolist(),
    }


def main(argv=None) -> dict:
    """Run the sweep; returns the results written to ``results.json``."""
    args = common.parser("sigma_sweep", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    dataset = data_mod.load("mnist5k", dequantize=True)
    rows, recon_rows, sample_rows = [], [], []
    for sigma in SIGMAS:
        vae, _, ev, x, seconds = common.train_and_score(
            dataset, {"name": "gaussian", "sigma": sigma}, budget
        )
        s = ev.summary()
        learned = None
        if sigma == "shared":
            with torch.no_grad():
                learned = float(vae.likelihood.loc_scale(torch.zeros(1, dataset.x_dim))[1])
        label = f"sigma {sigma}" if learned is None else f"learned sigma ({learned:.3f})"
        rows.append(
            {
                "sigma": sigma,
                "label": label,
                "learned_sigma": learned,
                **diagnostics(vae, x),
                "elbo": s["elbo"],
                "log_px": s["log_px"],
                "bits_per_dim_log_px": common.bits(vae, dataset, s["log_px"]["mean"]),
                "train_seconds": seconds,
            }
        )
        show = x[spread_subset(len(x), 10)]  # the split is ordered by class
        with torch.no_grad():
            recon_rows.append((label, vae.reconstruct(show).clamp(0, 1)))
            gen = torch.Generator().manual_seed(budget.seed)
            sample_rows.append((label, vae.sample(10, generator=gen).clamp(0, 1)))
        r = rows[-1]
        print(
            f"{label}: recon {r['reconstruction_sq_error']['mean']:.1f}, KL {r['kl']['mean']:.1f}, "
            f"active {r['active_units']}/{budget.z_dim}, log P(X) {s['log_px']['mean']:.1f}",
            flush=True,
        )

    results = {
        "experiment": "sigma_sweep",
        "dataset": "mnist5k (dequantized)",
        "budget": budget.to_dict(),
        "rows": rows,
    }
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "reconstructions.png": labelled_rows_figure(
                [("input", show), *recon_rows], (28, 28), "test images and their reconstructions"
            ),
            "samples.png": labelled_rows_figure(
                sample_rows, (28, 28), "samples from the prior (mean of P(x|z))"
            ),
            "tradeoff.png": tradeoff_figure(rows, budget.z_dim),
        },
    )


def tradeoff_figure(rows, z_dim: int):
    """Reconstruction error, KL and active units against sigma (fixed sigmas only)."""
    from matplotlib.figure import Figure

    fixed = [r for r in rows if r["learned_sigma"] is None]
    sig = [r["sigma"] for r in fixed]
    fig = Figure(figsize=(9, 3))
    axes = fig.subplots(1, 3)
    series = [
        ("squared reconstruction error", [r["reconstruction_sq_error"]["mean"] for r in fixed]),
        ("KL term, nats", [r["kl"]["mean"] for r in fixed]),
        (f"active units (of {z_dim})", [r["active_units"] for r in fixed]),
    ]
    for ax, (title, values) in zip(axes, series, strict=True):
        ax.plot(sig, values, marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("sigma")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("a larger sigma trades reconstruction for a smaller KL term", fontsize=10)
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    header = [
        "sigma",
        "squared recon. error",
        "KL term (nats)",
        "active units",
        "ELBO (nats)",
        "log P(X) (nats)",
        "bits/dim",
    ]
    rows = [
        [
            r["label"],
            common.mean_se(r["reconstruction_sq_error"], 1),
            common.mean_se(r["kl"], 1),
            r["active_units"],
            f"{r['elbo']['mean']:.1f}",
            f"{r['log_px']['mean']:.1f}",
            common.fmt(r["bits_per_dim_log_px"], 3),
        ]
        for r in results["rows"]
    ]
    return (
        f"\nmnist5k, dequantized 8-bit pixels, test split: {b['test_images']} images, K = "
        f"{b['num_samples']}; {b['epochs']} epochs, z_dim {b['z_dim']}, seed {b['seed']}, one run. "
        "Per test image, mean ± s.e.; active units: Var(E_q[z_d]) > 0.01.\n\n"
        + markdown_table(header, rows)
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
