"""Importance sampling against annealed importance sampling: how far log P(X) moves.

Every log P(X) the other pages publish is importance-sampled with the guide as
proposal, at K = 5,000. This experiment checks those numbers against a second
estimator, annealed importance sampling (``pyro_vae.ais``), on two models trained on
mnist5k at the experiment budget: the default VAE (784-400-20) and the two-stochastic-
layer model (``--model hvae``, 784-200-200-100-100-50).

For evenly spaced test images it reports, per model:

- IS at K = 10 ... 50,000 (prefixes of one stream of weights per image) and AIS from the
  guide at T = 100 ... T_MAX intermediate distributions (C chains of L leapfrog steps),
  each as its mean over images minus the AIS estimate at the largest T, paired per
  image, with the seconds each takes per image;
- the smallest K at which IS comes within 0.1 nats of that reference;
- the Pareto k-hat of every test image's K = 5,000 weights (the share above 0.7);
- the BDMC sandwich on as many points simulated from the model, at two values of T:
  how wide it is, which says how close the reference itself is to log P(X).

Usage: ``python experiments/estimators.py [--quick] [--out results/estimators]``
"""

from __future__ import annotations

import math
import time

import common
import pyro
import torch

from pyro_vae import data as data_mod
from pyro_vae.ais import ais_dataset, bdmc_dataset
from pyro_vae.evaluate import evaluate_dataset, khat_summary, log_weights, mean_and_stderr
from pyro_vae.likelihoods import Bernoulli
from pyro_vae.models import HVAE
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table
from pyro_vae.weights import KHAT_UNRELIABLE

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Importance sampling against annealed importance sampling"
PAGE = "estimators.md"
MINUTES = 21
ORDER = 15

#: images whose estimates are compared, evenly spaced over the test split
IMAGES = 50
#: K of the importance-sampled estimates (prefixes of one stream per image)
IS_KS = (10, 100, 1000, 5000, 50_000)
#: T of the AIS estimates, per model; the largest is the reference
AIS_STEPS = {"vae": (100, 300, 1000, 3000), "hvae": (100, 300, 1000)}
CHAINS, LEAPFROG = 8, 10
#: T of the BDMC runs (500 is the command's default)
BDMC_STEPS = (100, 500)
#: K of the published numbers, and of the k-hat of every test image
PUBLISHED_K = 5000
#: IS is "within" the reference when its mean is at most this far below it
WITHIN_NATS = 0.1

QUICK = dict(
    images=3,
    is_ks=(10, 100),
    ais_steps={"vae": (5, 10), "hvae": (5, 10)},
    chains=2,
    leapfrog=2,
    bdmc_steps=(5,),
    published_k=100,
    khat_images=20,
)
FULL = dict(
    images=IMAGES,
    is_ks=IS_KS,
    ais_steps=AIS_STEPS,
    chains=CHAINS,
    leapfrog=LEAPFROG,
    bdmc_steps=BDMC_STEPS,
    published_k=PUBLISHED_K,
    khat_images=None,  # every test image
)
MODELS = {
    "vae": "VAE 784-400-20 (the default)",
    "hvae": "two stochastic layers 784-200-200-100-100-50",
}


def build(name: str, dataset: data_mod.Dataset, budget: common.Budget):
    """The untrained model ``name`` at the budget's sizes (the quick budget shrinks them)."""
    from pyro_vae import VAE

    args = dict(likelihood=Bernoulli(), image_shape=dataset.image_shape)
    if name == "hvae":
        quick = budget.is_quick
        z_dims, hidden = ((4, 2), (32, 16)) if quick else ((100, 50), (200, 100))
        return HVAE(dataset.x_dim, z_dims=z_dims, hidden_dims=hidden, **args)
    return VAE(dataset.x_dim, z_dim=budget.z_dim, hidden_dims=budget.hidden_dims, **args)


def prefix_estimates(log_w: torch.Tensor, ks) -> torch.Tensor:
    """``log((1/K) sum_{k<K} w_k)`` for every K in ``ks`` from one ``(K_max, N)`` stream.

    :returns: ``(len(ks), N)`` double.
    """
    cumulative = torch.logcumsumexp(log_w.double(), dim=0)
    index = torch.tensor(ks) - 1
    return cumulative[index] - torch.tensor(ks, dtype=torch.float64).log().unsqueeze(-1)


def first_within(rows: list[dict], within: float):
    """The smallest K from which on IS is on average no more than ``within`` nats below
    the reference (at that K and every larger one)."""
    first = None
    for r in rows:
        if r["minus_reference"]["mean"] >= -within:
            first = r["k"] if first is None else first
        else:
            first = None
    return first


def compare(model, x, settings: dict, steps, seed: int) -> dict:
    """IS at every K and AIS at every T of ``steps`` on the images ``x``, against AIS at
    the largest T."""
    is_ks = settings["is_ks"]
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    log_w = log_weights(model.model, model.proposal, x, num_samples=max(is_ks))
    is_seconds = (time.perf_counter() - start) / len(x)  # per image at the largest K
    estimates = prefix_estimates(log_w, is_ks)  # (len(ks), N)
    ais = {}
    for t in steps:
        start = time.perf_counter()
        result = ais_dataset(
            model.model,
            model.proposal,
            x,
            seed=seed,
            num_steps=t,
            num_chains=settings["chains"],
            leapfrog_steps=settings["leapfrog"],
        )
        ais[t] = (result, (time.perf_counter() - start) / len(x))
    reference = ais[max(steps)][0].log_px.double()
    is_rows = [
        {
            "k": k,
            "log_px": mean_and_stderr(estimates[i]),
            "minus_reference": mean_and_stderr(estimates[i] - reference),
            # the decoder's share dominates, so a sample's cost is the same at any K
            "seconds_per_image": is_seconds * k / max(is_ks),
        }
        for i, k in enumerate(is_ks)
    ]
    ais_rows = [
        {
            "t": t,
            "log_px": mean_and_stderr(result.log_px),
            "minus_reference": mean_and_stderr(result.log_px.double() - reference),
            "acceptance": float(result.acceptance.mean()),
            "seconds_per_image": seconds,
        }
        for t, (result, seconds) in ais.items()
    ]
    published = estimates[list(is_ks).index(settings["published_k"])]
    return {
        "is": is_rows,
        "ais": ais_rows,
        "reference_steps": max(steps),
        "first_k_within": first_within(is_rows, WITHIN_NATS),
        # how far the published K = 5,000 estimate moves on these images
        "published_minus_reference": mean_and_stderr(published - reference),
    }


def sandwich(model, x, settings: dict, seed: int) -> list[dict]:
    """BDMC on one simulated point per image of ``x``, at every T of the settings."""
    rows = []
    for t in settings["bdmc_steps"]:
        start = time.perf_counter()
        result = bdmc_dataset(
            model.model,
            model.proposal,
            x,
            site="x",
            seed=seed,
            num_steps=t,
            num_chains=settings["chains"],
            leapfrog_steps=settings["leapfrog"],
        )
        rows.append(
            {
                "t": t,
                "lower": mean_and_stderr(result.lower),
                "upper": mean_and_stderr(result.upper),
                "width": {**mean_and_stderr(result.width), "max": float(result.width.max())},
                "seconds_per_point": (time.perf_counter() - start) / len(x),
            }
        )
    return rows


def main(argv=None) -> dict:
    """Train both models, compare the estimators; returns the results written."""
    args = common.parser("estimators", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    settings = dict(QUICK if args.quick else FULL)
    if args.test_images is not None:
        settings["images"] = args.test_images
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    x = dataset.x_test[spread_subset(len(dataset.x_test), settings["images"])]
    all_x = dataset.x_test[spread_subset(len(dataset.x_test), settings["khat_images"])]
    models = {}
    for name in MODELS:
        pyro.set_rng_seed(budget.seed)
        model, history, seconds = common.train_model(build(name, dataset, budget), dataset, budget)
        khat = evaluate_dataset(
            model.model,
            model.proposal,
            all_x,
            num_samples=settings["published_k"],
            ks=(1,),
            seed=budget.seed,
        ).khat
        models[name] = {
            "label": MODELS[name] + (" at the quick sizes" if budget.is_quick else ""),
            "train_seconds": seconds,
            "test_elbo_after_training": history.test_elbo[-1],
            "khat": {**khat_summary(khat), "values": khat.tolist()},
            **compare(model, x, settings, settings["ais_steps"][name], budget.seed),
            "bdmc": sandwich(model, x, settings, budget.seed),
        }
        print(f"{name} done", flush=True)
    results = {
        "experiment": "estimators",
        "budget": budget.to_dict(),
        "images": len(x),
        "khat_images": len(all_x),
        "chains": settings["chains"],
        "leapfrog_steps": settings["leapfrog"],
        "published_k": settings["published_k"],
        "within_nats": WITHIN_NATS,
        "threads": torch.get_num_threads(),
        "models": models,
    }
    figures = {"estimators.png": cost_figure(results), "khat.png": khat_figure(results)}
    return common.finish(args.out, results, table(results), figures)


def cost_figure(results: dict):
    """Estimate minus the reference against seconds per image, IS and AIS, per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    for ax, m in zip(
        fig.subplots(1, len(results["models"])), results["models"].values(), strict=True
    ):
        for rows, key, colour, label in (
            (m["is"], "k", "C0", "IS, z from Q (K)"),
            (m["ais"], "t", "C3", "AIS from Q (T)"),
        ):
            x = [r["seconds_per_image"] for r in rows]
            y = [r["minus_reference"]["mean"] for r in rows]
            e = [2 * r["minus_reference"]["stderr"] for r in rows]
            ax.errorbar(x, y, yerr=e, marker="o", color=colour, label=label, capsize=3)
            for r, xi, yi in zip(rows, x, y, strict=True):
                ax.annotate(
                    f"{r[key]:,}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7
                )
        ax.axhline(0, color="k", linewidth=0.8)
        ax.axhline(-results["within_nats"], color="k", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("seconds per image")
        ax.set_ylabel(f"estimate - AIS at T = {m['reference_steps']:,}, nats")
        ax.set_title(m["label"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"log P(X) on {results['images']} mnist5k test images, mean over images paired "
        f"with the reference (bars: 2 s.e.; dotted: {results['within_nats']} nats below)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def khat_figure(results: dict):
    """Histogram of the Pareto k-hat of every test image's weights, per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    bins = [i / 10 for i in range(-5, 31)]  # -0.5 to 3; larger values in the last bin
    for colour, m in zip(("C0", "C2"), results["models"].values(), strict=True):
        values = [min(v, 3.0) for v in m["khat"]["values"] if v is not None and math.isfinite(v)]
        ax.hist(values, bins=bins, alpha=0.5, color=colour, label=m["label"])
    ax.axvline(KHAT_UNRELIABLE, color="k", linestyle="--", linewidth=0.8)
    ax.set_xlabel(
        f"Pareto k-hat of K = {results['published_k']:,} weights (dashed: 0.7; "
        "above 3 counted at 3)"
    )
    ax.set_ylabel("test images")
    ax.set_title(f"{results['khat_images']} mnist5k test images", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    parts = [
        f"\nmnist5k, dynamic binarization, Bernoulli likelihood, {b['epochs']} epochs, seed "
        f"{b['seed']}; log P(X) on {results['images']} evenly spaced test images, nats per "
        f"image. AIS from Q(z|X) with C = {results['chains']} chains of L = "
        f"{results['leapfrog_steps']} leapfrog steps; each row's mean minus the AIS "
        "estimate at the largest T, paired per image (± s.e.); seconds per image on "
        f"{results['threads']} threads.\n"
    ]
    for m in results["models"].values():
        rows = [
            [
                f"IS, K = {r['k']:,}",
                common.fmt(r["log_px"]["mean"]),
                common.mean_se(r["minus_reference"], 3),
                "",
                f"{r['seconds_per_image']:.3g}",
            ]
            for r in m["is"]
        ] + [
            [
                f"AIS, T = {r['t']:,}",
                common.fmt(r["log_px"]["mean"]),
                common.mean_se(r["minus_reference"], 3),
                f"{r['acceptance']:.2f}",
                f"{r['seconds_per_image']:.3g}",
            ]
            for r in m["ais"]
        ]
        header = ["estimator", "log P(X)", "minus the reference", "HMC acceptance", "s / image"]
        k = m["first_k_within"]
        p = m["published_minus_reference"]
        kh = m["khat"]
        bdmc = [
            [
                f"T = {r['t']:,}",
                f"{r['lower']['mean']:.2f}",
                f"{r['upper']['mean']:.2f}",
                common.mean_se(r["width"], 3),
                f"{r['width']['max']:.2f}",
                f"{r['seconds_per_point']:.3g}",
            ]
            for r in m["bdmc"]
        ]
        parts += [
            f"\n### {m['label']}\n\nTest ELBO after training: "
            f"{m['test_elbo_after_training']:.2f}.\n\n",
            markdown_table(header, rows),
            (
                f"\nIS is on average more than {results['within_nats']} nats below the "
                f"reference at every K tried, up to {m['is'][-1]['k']:,}. "
                if k is None
                else f"\nIS is on average no more than {results['within_nats']} nats below "
                f"the reference from K = {k:,} on. "
            )
            + f"The published estimate (K = {results['published_k']:,}) minus the reference: "
            f"{common.mean_se(p, 3)} nats.\n\n"
            f"Pareto k-hat of the K = {results['published_k']:,} weights of "
            f"{results['khat_images']} test images: mean {kh['mean']:.2f}, "
            f"{100 * kh['share_unreliable']:.0f}% above {kh['threshold']}.\n\n"
            f"BDMC on {results['images']} points simulated from the model (one per image):\n\n",
            markdown_table(
                ["T", "lower bound", "upper bound", "width", "largest width", "s / point"], bdmc
            ),
        ]
    return "".join(parts)


if __name__ == "__main__":
    main()
