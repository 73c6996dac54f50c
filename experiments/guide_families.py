"""Where the ELBO gap goes: richer guide families and a second stochastic layer.

Doersch's eq. 5 says ``log P(X) - ELBO = D[Q(z|X) || P(z|X)]``. That divergence has two
sources (Cremer et al. 2018): the encoder does not find the best member of its family
for each X (the amortization gap), and the best member is still not P(z|X) (the
approximation gap). A richer family (a full covariance, inverse autoregressive flow
steps) can only shrink the second; a deeper model changes P(z|X) itself, and is judged
by log P(X).

On mnist5k (dynamic binarization, Bernoulli likelihood, the same split, budget and
seeds for every row) one model per row and seed is trained by Trace_ELBO:

- ``diagonal``, ``full-covariance``, ``iaf-2``, ``iaf-4``: the default 784-400-20 VAE
  with each guide family (``--guide``, ``--flow-steps``);
- ``diagonal, 200-200-50``: a one-layer VAE of the size Burda et al. use (784-200-200-50),
  the like-for-like reference of
- ``two-layer``: the two-stochastic-layer model (``--model hvae``,
  784-200-200-100-100-50).

Per row: the test ELBO, L_50 and log P(X) (K = 5,000) on TEST_IMAGES evenly spaced test
images, the gap log P(X) - ELBO, its amortization and approximation parts on GAP_POINTS
of them (q* fitted per point in the model's own family), and the training seconds per
epoch. Every value is averaged over SEEDS; the tables give the standard error over test
images of the seed-averaged values, the spread of the seed means, and differences
paired by image against the diagonal guide.

Usage: ``python experiments/guide_families.py [--quick] [--out results/guide_families]``
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import common
import pyro
import torch

from pyro_vae import VAE, Bernoulli
from pyro_vae import data as data_mod
from pyro_vae.diagnostics import active_units
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.gaps import decompose_gap
from pyro_vae.guides import IAF, DiagonalGaussian, FullCovariance
from pyro_vae.models import HVAE
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Guide families and a second stochastic layer: where the ELBO gap goes"
PAGE = "guide_families.md"
MINUTES = 36
ORDER = 12

SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)
TEST_IMAGES = 500
GAP_POINTS = 100
GAP_STEPS = 500
QUICK_GAP_POINTS = 4
QUICK_GAP_STEPS = 10
BOUND_K = 50
#: the row every other row is compared with, image by image
REFERENCE = "diagonal"


@dataclass(frozen=True)
class Row:
    """One model of the comparison."""

    name: str
    label: str
    description: str

    def build(self, dataset: data_mod.Dataset, budget: common.Budget):
        """The untrained model at ``budget``'s sizes (the quick budget shrinks them)."""
        quick = budget.is_quick
        common_args = dict(likelihood=Bernoulli(), image_shape=dataset.image_shape)
        if self.name == "two-layer":
            z_dims, hidden = ((4, 2), (32, 16)) if quick else ((100, 50), (200, 100))
            return HVAE(dataset.x_dim, z_dims=z_dims, hidden_dims=hidden, **common_args)
        if self.name == "diagonal-burda":
            z_dim, hidden = (4, (32, 32)) if quick else (50, (200, 200))
            return VAE(dataset.x_dim, z_dim=z_dim, hidden_dims=hidden, **common_args)
        family = {
            "diagonal": DiagonalGaussian(),
            "full-covariance": FullCovariance(),
            "iaf-2": IAF(flow_steps=2),
            "iaf-4": IAF(flow_steps=4),
        }[self.name]
        return VAE(
            dataset.x_dim,
            z_dim=budget.z_dim,
            hidden_dims=budget.hidden_dims,
            guide_family=family,
            **common_args,
        )


ROWS = (
    Row("diagonal", "diagonal", "diagonal Gaussian Q (the default)"),
    Row("full-covariance", "full-covariance", "Gaussian Q with a full covariance"),
    Row("iaf-2", "IAF, T = 2", "diagonal Gaussian + 2 IAF steps"),
    Row("iaf-4", "IAF, T = 4", "diagonal Gaussian + 4 IAF steps"),
    Row("diagonal-burda", "diagonal, 200-200-50", "diagonal Gaussian Q"),
    Row("two-layer", "two-layer", "q(z1|x) q(z2|z1)"),
)


def networks(model) -> str:
    """The layer sizes from the data to the deepest latent, e.g. ``784-400-20``."""
    if isinstance(model, HVAE):
        (z1, z2), (h1, h2) = model.z_dims, model.hidden_dims
        sizes = (model.x_dim, h1, h1, z1, h2, h2, z2)
    else:
        sizes = (model.x_dim, *model.hidden_dims, model.z_dim)
    return "-".join(str(s) for s in sizes)


@torch.no_grad()
def active(model, x: torch.Tensor) -> list[int]:
    """Active units (Var over images of the guide's centre > 0.01, Burda et al.) per
    latent layer: ``[z]``, or ``[z1, z2]`` for the two-layer model, whose z2 centre is
    taken at z1's centre."""
    if isinstance(model, HVAE):
        loc1, _ = model.encoder1(x)
        loc2, _ = model.encoder2(loc1)
        return [active_units(loc1).count, active_units(loc2).count]
    center = model.guide_family.center(model.encoder, model.encoder(x))
    return [active_units(center).count]


def score(model, x: torch.Tensor, budget: common.Budget, gap_points: int, gap_steps: int):
    """Per-image ELBO, L_50, log P(X) on ``x`` and, where the model allows it, the gap
    decomposition on ``gap_points`` of them (as tensors of the CPU)."""
    ev = evaluate_dataset(
        model.model, model.guide, x, num_samples=budget.num_samples, ks=(BOUND_K,), seed=budget.seed
    )
    out = {"elbo": ev.elbo, "bound": ev.bounds[0], "log_px": ev.log_px}
    if model.supports("gap_decomposition"):
        points = x[spread_subset(len(x), gap_points)]
        g = decompose_gap(
            model, points, steps=gap_steps, num_samples=budget.num_samples, seed=budget.seed
        )
        out.update(amortization=g.amortization_gap, approximation=g.approximation_gap)
    return out


def main(argv=None) -> dict:
    """Train and score every row for every seed; returns the results in ``results.json``."""
    args = common.parser("guide_families", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    seeds = QUICK_SEEDS if args.quick else SEEDS
    if args.seed != 0:
        seeds = tuple(args.seed + s for s in seeds)
    if args.quick:  # enough samples for L_50, so that the quick run takes every path
        budget.num_samples = max(budget.num_samples, BOUND_K)
    else:
        budget.test_images = min(budget.test_images, TEST_IMAGES)
    gap_points = QUICK_GAP_POINTS if args.quick else GAP_POINTS
    gap_steps = QUICK_GAP_STEPS if args.quick else GAP_STEPS
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    x = dataset.x_test[spread_subset(len(dataset.x_test), budget.test_images)]
    per_seed: dict[str, list[dict]] = {row.name: [] for row in ROWS}
    samples = {}
    for seed in seeds:
        b = common.Budget(**{**budget.to_dict(), "seed": seed})
        for row in ROWS:
            pyro.set_rng_seed(seed)
            model = row.build(dataset, b)
            model, history, _ = common.train_model(model, dataset, b)
            values = score(model, x, b, gap_points, gap_steps)
            values["epoch_seconds"] = sum(history.seconds) / len(history.seconds)
            values["test_elbo_curve"] = list(history.test_elbo)
            values["active_units"] = active(model, x)
            values["parameters"] = sum(p.numel() for p in model.parameters())
            values["networks"] = networks(model)
            per_seed[row.name].append(values)
            if seed == seeds[0]:
                with torch.no_grad():
                    samples[row.label] = model.sample(
                        12, generator=torch.Generator().manual_seed(0)
                    )
            print(
                f"seed {seed}, {row.label}: ELBO {values['elbo'].mean():.2f}, "
                f"log P(X) {values['log_px'].mean():.2f}, "
                f"{values['epoch_seconds']:.2f} s/epoch",
                flush=True,
            )
    results = {
        "experiment": "guide_families",
        "budget": {**budget.to_dict(), "seeds": list(seeds)},
        "test_images": len(x),
        "gap_points": gap_points,
        "gap_steps": gap_steps,
        "bound_k": BOUND_K,
        "reference": REFERENCE,
        "rows": [summarize(row, per_seed[row.name], per_seed[REFERENCE]) for row in ROWS],
    }
    figures = {
        "guide_families.png": gap_figure(results),
        "samples.png": labelled_rows_figure(
            list(samples.items()),
            dataset.image_shape,
            title=f"samples from P(z)P(X|z), seed {seeds[0]}",
        ),
    }
    return common.finish(args.out, results, table(results), figures)


def summarize(row: Row, runs: list[dict], reference: list[dict]) -> dict:
    """One row of the results: seed-averaged per-image values, their mean and s.e. over
    images, the spread of the seed means and the paired differences to the reference."""

    def averaged(key: str, of: list[dict]) -> torch.Tensor:
        return torch.stack([r[key] for r in of]).double().mean(0)

    out = {
        "name": row.name,
        "label": row.label,
        "description": row.description,
        "parameters": runs[0]["parameters"],
        "networks": runs[0]["networks"],
        "epoch_seconds": sum(r["epoch_seconds"] for r in runs) / len(runs),
        # mean over seeds of the test ELBO (all test images) after every epoch
        "test_elbo_curve": torch.tensor([r["test_elbo_curve"] for r in runs]).mean(0).tolist(),
        "active_units": torch.tensor([r["active_units"] for r in runs]).double().mean(0).tolist(),
    }
    for key in ("elbo", "bound", "log_px"):
        out[key] = mean_and_stderr(averaged(key, runs))
        out[key]["seed_means"] = [float(r[key].double().mean()) for r in runs]
    out["gap"] = mean_and_stderr(averaged("log_px", runs) - averaged("elbo", runs))
    out["log_px_vs_reference"] = mean_and_stderr(
        averaged("log_px", runs) - averaged("log_px", reference)
    )
    out["elbo_vs_reference"] = mean_and_stderr(averaged("elbo", runs) - averaged("elbo", reference))
    if "amortization" in runs[0]:
        for key in ("amortization", "approximation"):
            out[key] = mean_and_stderr(averaged(key, runs))
            out[key]["seed_means"] = [float(r[key].double().mean()) for r in runs]
        out["approximation_vs_reference"] = mean_and_stderr(
            averaged("approximation", runs) - averaged("approximation", reference)
        )
    else:
        out["amortization"] = out["approximation"] = None
        out["approximation_vs_reference"] = None
    return out


def pm(value: dict | None, digits: int = 2) -> str:
    """``mean ± s.e.``, or a dash where the row has no such value."""
    if value is None:
        return "—"
    return common.mean_se(value, digits)


def spread(value: dict) -> str:
    """The range of the seed means."""
    means = value["seed_means"]
    return f"{max(means) - min(means):.2f}" if len(means) > 1 else "n/a"


def table(results: dict) -> str:
    b = results["budget"]
    seeds = ", ".join(str(s) for s in b["seeds"])
    main_rows = [
        [
            r["label"],
            pm(r["elbo"]),
            pm(r["bound"]),
            pm(r["log_px"]),
            spread(r["log_px"]),
            pm(r["gap"]),
            pm(r["amortization"]),
            pm(r["approximation"]),
            " / ".join(f"{a:.3g}" for a in r["active_units"]),
            f"{r['epoch_seconds']:.2f}",
        ]
        for r in results["rows"]
    ]
    paired_rows = [
        [
            r["label"],
            f"{r['networks']}, {r['description']}",
            f"{r['parameters']:,}",
            pm(r["elbo_vs_reference"]),
            pm(r["log_px_vs_reference"]),
            pm(r["approximation_vs_reference"]),
        ]
        for r in results["rows"]
        if r["name"] != results["reference"]
    ]
    return (
        f"\nmnist5k, dynamic binarization, Bernoulli likelihood, {b['epochs']} epochs of "
        f"Trace_ELBO per model, seeds {seeds}; {results['test_images']} evenly spaced test "
        f"images, K = {b['num_samples']}; the gap parts on {results['gap_points']} of them "
        f"(q* fitted by {results['gap_steps']} SVI steps). Nats per image: each value is "
        "averaged over the seeds, then its mean ± s.e. over images is shown; 'seed range' "
        "is the largest minus the smallest seed mean of log P(X); 'active units' (of z, or "
        "z1 / z2) is the mean over seeds of the units whose guide centre varies over the "
        "test images by more than 0.01.\n\n"
        + markdown_table(
            [
                "guide / model",
                "ELBO",
                f"L_{results['bound_k']}",
                "log P(X)",
                "seed range",
                "gap",
                "amortization",
                "approximation",
                "active units",
                "s / epoch",
            ],
            main_rows,
        )
        + f"\nDifferences to the {results['reference']} guide, paired by test image "
        "(mean ± s.e.; positive is better for ELBO and log P(X), negative for the "
        "approximation gap):\n\n"
        + markdown_table(
            ["guide / model", "networks", "parameters", "Δ ELBO", "Δ log P(X)", "Δ approximation"],
            paired_rows,
        )
        + "\n"
    )


def gap_figure(results: dict):
    """Left: ELBO, L_50 and log P(X) per row. Middle: the gap split into its parts.
    Right: the test ELBO over training."""
    from matplotlib.figure import Figure

    rows = results["rows"]
    labels = [r["label"] for r in rows]
    positions = range(len(rows))
    fig = Figure(figsize=(16, 4.4))
    left, right, curves = fig.subplots(1, 3)
    common.test_elbo_curves(curves, rows)
    for offset, (key, label) in zip(
        (-0.2, 0.0, 0.2),
        (("elbo", "ELBO"), ("bound", f"L_{results['bound_k']}"), ("log_px", "log P(X)")),
        strict=True,
    ):
        left.errorbar(
            [p + offset for p in positions],
            [r[key]["mean"] for r in rows],
            yerr=[r[key]["stderr"] for r in rows],
            fmt="o",
            capsize=3,
            label=label,
        )
    left.set_xticks(list(positions), labels, rotation=20, fontsize=8)
    left.set_ylabel("nats per test image")
    left.set_title("bounds and log P(X) (± s.e. over test images)", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for p, r in zip(positions, rows, strict=True):
        if r["approximation"] is None:
            right.bar(p, r["gap"]["mean"], color="0.8", hatch="//", edgecolor="0.4")
            right.text(p, r["gap"]["mean"], "not split", ha="center", va="bottom", fontsize=7)
            continue
        approx, amort = r["approximation"]["mean"], r["amortization"]["mean"]
        right.bar(p, approx, color="tab:blue", label="approximation" if p == 0 else None)
        right.bar(
            p, amort, bottom=approx, color="tab:orange", label="amortization" if p == 0 else None
        )
    right.set_xticks(list(positions), labels, rotation=20, fontsize=8)
    right.set_ylabel("nats per test image")
    right.set_title(
        f"gap log P(X) - ELBO = D[Q(z|X) || P(z|X)], split on {results['gap_points']} images",
        fontsize=9,
    )
    right.grid(alpha=0.3, axis="y")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
