"""Doersch section 2.3 and the MNIST figure: generating is decoding prior samples.

At test time the encoder is gone: ``z ~ N(0, I)`` goes through the decoder and that
is the whole generator. For the default VAE (mnist5k, dynamic binarization,
Bernoulli, 784-400-20, the experiment budget) this draws 100 samples (the means of
P(X|z), and binary draws from P(X|z)) and shows test digits beside their
reconstructions. To check that samples are new digits rather than copies, it
compares each sample's squared distance to its nearest training image with the same
distance for held-out test images (binarized, like the training data the model saw).

Usage: ``python experiments/prior_samples.py [--quick] [--out results/prior_samples]``
"""

from __future__ import annotations

import sys

import common
import torch

from pyro_vae import data as data_mod
from pyro_vae.evaluate import mean_and_stderr, mean_elbo
from pyro_vae.plots import grid_figure, reconstruction_figure
from pyro_vae.splits import evaluation_split, spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Section 2.3: samples from the prior, reconstructions"
PAGE = "prior_samples.md"
MINUTES = 1
ORDER = 4

NUM_SAMPLES = 100


def nearest_sq_distance(queries: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance from each query row to its nearest reference row."""
    return torch.cdist(queries, reference).pow(2).min(-1).values


def main(argv=None) -> dict:
    """Train, sample and compare; returns the results written to ``results.json``."""
    args = common.parser("prior_samples", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    vae, _, seconds = common.train_vae(dataset, {"name": "bernoulli"}, budget)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(budget.seed)
        means = vae.sample(NUM_SAMPLES, generator=gen)
        binary = torch.bernoulli(means, generator=gen)
        x_test = dataset.x_test[spread_subset(len(dataset.x_test), budget.test_images)]
        recon = vae.reconstruct(x_test[spread_subset(len(x_test), 40)])
    train = evaluation_split(dataset, "train")  # one fixed binarization of the training set
    torch.manual_seed(budget.seed)
    test_elbo = mean_elbo(vae.model, vae.guide, x_test, num_particles=10)
    distances = {
        "binary_samples": mean_and_stderr(nearest_sq_distance(binary, train)),
        "test_images": mean_and_stderr(nearest_sq_distance(x_test, train)),
        "sample_means": mean_and_stderr(nearest_sq_distance(means, train)),
    }
    results = {
        "experiment": "prior_samples",
        "budget": budget.to_dict(),
        "num_samples": NUM_SAMPLES,
        "test_images": len(x_test),
        "test_elbo": test_elbo,
        "train_seconds": seconds,
        "nearest_training_sq_distance": distances,
    }
    shape = dataset.image_shape
    title = "z ~ N(0, I) through the decoder: mean of P(X|z)"
    shown = x_test[spread_subset(len(x_test), 40)]
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "samples.png": grid_figure(means, shape, title, ncols=10),
            "binary_samples.png": grid_figure(
                binary, shape, "one binary draw from P(X|z) per sample", ncols=10
            ),
            "reconstructions.png": reconstruction_figure(
                shown, recon, shape, "test digits (odd rows) and reconstructions (even rows)"
            ),
        },
    )


def table(r: dict) -> str:
    b, d = r["budget"], r["nearest_training_sq_distance"]

    def distance(key: str) -> str:
        return common.mean_se(d[key], 1)

    rows = [
        [f"{r['num_samples']} binary samples from P(X|z), z ~ N(0, I)", distance("binary_samples")],
        [f"{r['test_images']} binarized test images (not trained on)", distance("test_images")],
        [
            f"{r['num_samples']} sample means (grey levels, for reference)",
            distance("sample_means"),
        ],
    ]
    return (
        f"\nmnist5k VAE (dynamic binarization, Bernoulli, 784-{b['hidden_dims'][0]}-{b['z_dim']}, "
        f"{b['epochs']} epochs, seed {b['seed']}), one run; test ELBO {r['test_elbo']:.2f} nats "
        f"per image on {r['test_images']} test images. Squared distance to the nearest of the "
        "4,000 (binarized) training images, mean ± s.e.:\n\n"
        + markdown_table(["images", "nearest training image"], rows)
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
