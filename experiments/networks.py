"""Fully connected against convolutional networks, at the same budget.

The model code does not change with ``--network``: the same VAE and VQ-VAE are built
with MLPs (784-400-z) or with two stride-2 convolutions (32 and 64 channels) before the
400-unit hidden layer and transposed convolutions mirroring them. Each is trained on
mnist5k (dynamic binarization, Bernoulli likelihood; same split, budget and seed) and,
where its files are present, on 4,000 training images of Fashion-MNIST (torchvision's
files under ``--data-dir``; a machine with a network downloads them with
``pyro-vae train --dataset fashion-mnist``). Per model: test ELBO and log P(X) on
TEST_IMAGES evenly spaced test images (importance-sampled with K = NUM_SAMPLES for the
VAE, exact for the VQ-VAE), parameters and training seconds per epoch.

Usage: ``python experiments/networks.py [--quick] [--data-dir data] [--out results/networks]``
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import common
import pyro
import torch

from pyro_vae import VAE, Bernoulli
from pyro_vae import data as data_mod
from pyro_vae.errors import UsageError
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.models import VQVAE
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Fully connected against convolutional networks"
PAGE = "networks.md"
MINUTES = 7
ORDER = 14

TEST_IMAGES = 200
#: importance samples per image for the VAE's log P(X): a conv decoder costs about 15
#: times an MLP's per sample, so fewer than the other experiments' 5,000
NUM_SAMPLES = 1000
TRAIN_IMAGES = 4000
NETWORK_CHOICES = ("mlp", "conv")


def build(kind: str, network: str, dataset: data_mod.Dataset, budget: common.Budget):
    """The VAE (z of ``budget.z_dim``) or the VQ-VAE (k = 64 codes of 16 numbers,
    nearest-code selection) with ``network``."""
    shared = dict(
        hidden_dims=budget.hidden_dims,
        likelihood=Bernoulli(),
        image_shape=dataset.image_shape,
        network=network,
    )
    if kind == "vae":
        return VAE(dataset.x_dim, z_dim=budget.z_dim, **shared)
    codes = 8 if budget.is_quick else 64
    return VQVAE(dataset.x_dim, codes=codes, code_dim=16, select="distance", **shared)


def datasets(data_dir: Path, quick: bool) -> dict[str, data_mod.Dataset | str]:
    """mnist5k, and Fashion-MNIST cut to mnist5k's 4,000 training images where its
    files are present (else the reason it is not)."""
    out: dict[str, data_mod.Dataset | str] = {
        "mnist5k": data_mod.load("mnist5k", binarize="dynamic")
    }
    if quick:
        return out
    try:
        fashion = data_mod.load(
            "fashion-mnist", binarize="dynamic", data_dir=data_dir, download=False
        )
    except UsageError as err:
        out["fashion-mnist"] = f"not available here ({str(err).split('(')[0].strip()})"
        return out
    keep = spread_subset(len(fashion.x_train), TRAIN_IMAGES)
    out["fashion-mnist"] = dataclasses.replace(
        fashion,
        x_train=fashion.x_train[keep],
        y_train=None if fashion.y_train is None else fashion.y_train[keep],
    )
    return out


def main(argv=None) -> dict:
    """Train both networks for both models on every available data set."""
    p = common.parser("networks", __doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="torchvision's files")
    args = p.parse_args(argv)
    budget = common.budget_from(args)
    if not args.quick:
        budget.test_images = min(budget.test_images, TEST_IMAGES)
        budget.num_samples = min(budget.num_samples, NUM_SAMPLES)
    rows, skipped, samples = [], {}, []
    for name, dataset in datasets(args.data_dir, args.quick).items():
        if isinstance(dataset, str):
            skipped[name] = dataset
            continue
        x = dataset.x_test[spread_subset(len(dataset.x_test), budget.test_images)]
        for kind in ("vae", "vqvae"):
            for network in NETWORK_CHOICES:
                pyro.set_rng_seed(budget.seed)
                model = build(kind, network, dataset, budget)
                model, history, _ = common.train_model(model, dataset, budget)
                if kind == "vae":
                    ev = evaluate_dataset(
                        model.model,
                        model.guide,
                        x,
                        num_samples=budget.num_samples,
                        ks=(1,),
                        seed=budget.seed,
                    )
                    elbo, log_px = ev.elbo, ev.log_px
                else:
                    elbo, log_px = model.elbo(x), model.exact_log_likelihood(x)
                rows.append(
                    {
                        "dataset": name,
                        "model": kind,
                        "network": network,
                        "elbo": mean_and_stderr(elbo),
                        "log_px": mean_and_stderr(log_px),
                        "parameters": sum(t.numel() for t in model.parameters()),
                        "codes": getattr(model, "codes", None),
                        "epoch_seconds": sum(history.seconds) / len(history.seconds),
                    }
                )
                if network == "conv":  # paired with the MLP row of the same model
                    mlp = rows[-2]["log_px_values"]
                    rows[-1]["conv_minus_mlp"] = mean_and_stderr(log_px - mlp)
                rows[-1]["log_px_values"] = log_px
                gen = torch.Generator().manual_seed(budget.seed)
                samples.append((f"{name}, {kind}, {network}", model.sample(10, generator=gen)))
                print(
                    f"{name}, {kind}, {network}: log P(X) {rows[-1]['log_px']['mean']:.2f}, "
                    f"{rows[-1]['epoch_seconds']:.2f} s/epoch",
                    flush=True,
                )
    for r in rows:
        del r["log_px_values"]
    results = {
        "experiment": "networks",
        "budget": budget.to_dict(),
        "rows": rows,
        "skipped": skipped,
    }
    figures = {
        "samples.png": labelled_rows_figure(
            samples, (28, 28), "samples from the prior, mean of p(x|z)"
        )
    }
    return common.finish(args.out, results, table(results), figures)


def table(results: dict) -> str:
    b = results["budget"]
    lines = [
        [
            r["dataset"],
            "VAE" if r["model"] == "vae" else f"VQ-VAE (k = {r['codes']})",
            r["network"],
            f"{r['elbo']['mean']:.2f}",
            common.mean_se(r["log_px"]),
            "" if "conv_minus_mlp" not in r else common.mean_se(r["conv_minus_mlp"], sign="+"),
            f"{r['parameters']:,}",
            f"{r['epoch_seconds']:.2f}",
        ]
        for r in results["rows"]
    ]
    skipped = "".join(f"\n{name}: {why}.\n\n" for name, why in results["skipped"].items())
    return (
        f"\nBernoulli likelihood on dynamically binarized images, {b['epochs']} epochs of "
        f"{TRAIN_IMAGES} training images, seed {b['seed']}, one run per row; "
        f"{b['test_images']} evenly spaced test images; log P(X) importance-sampled with "
        f"K = {b['num_samples']} (VAE) or exact (VQ-VAE, a sum over its codes); nats per "
        "image, ± s.e. over images; 'conv - MLP' paired by image.\n\n"
        + markdown_table(
            [
                "data",
                "model",
                "network",
                "ELBO",
                "log P(X)",
                "conv - MLP",
                "parameters",
                "s / epoch",
            ],
            lines,
        )
        + skipped
    )


if __name__ == "__main__":
    main(sys.argv[1:])
