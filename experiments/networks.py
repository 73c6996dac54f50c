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
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import common
import pyro
import torch

from pyro_vae import VAE, Bernoulli
from pyro_vae import data as data_mod
from pyro_vae.errors import UsageError
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.models import VQVAE, Model
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


def _layers(network: str, dataset: data_mod.Dataset, budget: common.Budget) -> dict:
    """The constructor arguments both models share: the networks and the likelihood."""
    return dict(
        hidden_dims=budget.hidden_dims,
        likelihood=Bernoulli(),
        image_shape=dataset.image_shape,
        network=network,
    )


def _vae(network: str, dataset: data_mod.Dataset, budget: common.Budget) -> VAE:
    """The VAE, z of ``budget.z_dim``."""
    return VAE(dataset.x_dim, z_dim=budget.z_dim, **_layers(network, dataset, budget))


def _vqvae(network: str, dataset: data_mod.Dataset, budget: common.Budget) -> VQVAE:
    """The VQ-VAE: k = 64 codes (8 in a quick run) of 16 numbers, nearest-code selection."""
    codes = 8 if budget.is_quick else 64
    return VQVAE(
        dataset.x_dim,
        codes=codes,
        code_dim=16,
        select="distance",
        **_layers(network, dataset, budget),
    )


def _importance_sampled(model: Model, x: torch.Tensor, budget: common.Budget):
    """``(ELBO, log P(X))`` per image, from K = ``budget.num_samples`` samples of the guide."""
    ev = evaluate_dataset(
        model.model, model.guide, x, num_samples=budget.num_samples, ks=(1,), seed=budget.seed
    )
    return ev.elbo, ev.log_px


def _exact(model: VQVAE, x: torch.Tensor, budget: common.Budget):
    """``(ELBO, log P(X))`` per image, both exact: the VQ-VAE's guide is one point and its
    log P(X) a sum over its codes."""
    return model.elbo(x), model.exact_log_likelihood(x)


class Compared(NamedTuple):
    """One model of the comparison: how it is built with either network, how it is
    scored, and how the table names a row of it."""

    build: Callable[[str, data_mod.Dataset, common.Budget], Model]
    score: Callable[[Model, torch.Tensor, common.Budget], tuple[torch.Tensor, torch.Tensor]]
    label: Callable[[dict], str]


#: the models compared, in the order of the table's rows
MODELS = {
    "vae": Compared(_vae, _importance_sampled, lambda row: "VAE"),
    "vqvae": Compared(_vqvae, _exact, lambda row: f"VQ-VAE (k = {row['codes']})"),
}


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
        for model_name, compared in MODELS.items():
            for network in NETWORK_CHOICES:
                pyro.set_rng_seed(budget.seed)
                model = compared.build(network, dataset, budget)
                model, history, _ = common.train_model(model, dataset, budget)
                elbo, log_px = compared.score(model, x, budget)
                rows.append(
                    {
                        "dataset": name,
                        "model": model_name,
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
                label = f"{name}, {model_name}, {network}"
                samples.append((label, model.sample(10, generator=gen)))
                print(
                    f"{label}: log P(X) {rows[-1]['log_px']['mean']:.2f}, "
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
            MODELS[r["model"]].label(r),
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
