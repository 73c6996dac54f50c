"""A VAE with a 2-D latent: the learned manifold and where the test digits land.

With ``z_dim = 2`` the whole generator fits on one page. The decoder's means on a
GRID x GRID grid of prior quantiles, ``z = Phi^-1(q)`` for evenly spaced q in (0, 1),
show the learned manifold (each region of the prior a digit style, with smooth
transitions between them); the encoder's posterior means of the test digits,
coloured by label, show how the classes share the prior's mass.

Reported: test ELBO and importance-sampled log P(X) (compare the 20-D model of the
README), the accuracy of a 5-nearest-neighbour classifier on the 2-D posterior means
(labels never seen in training), and the mean and standard deviation per latent
dimension of the posterior means, which N(0, I) would put at 0 and at most 1.

Usage: ``python experiments/manifold_2d.py [--quick] [--out results/manifold_2d]``
"""

from __future__ import annotations

import sys

import common
import torch

from pyro_vae import data as data_mod
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.plots import grid_figure
from pyro_vae.splits import evaluation_split, spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "A 2-D latent: the learned manifold"
PAGE = "manifold_2d.md"
MINUTES = 2
ORDER = 6

GRID = 20
NEIGHBOURS = 5


def quantile_grid(n: int) -> torch.Tensor:
    """``(n * n, 2)`` latent points ``Phi^-1(q)``, q = (i + 0.5) / n; rows run from high
    ``z_2`` to low so the image reads like a plot."""
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    z = torch.distributions.Normal(0.0, 1.0).icdf(q).float()
    z1, z2 = torch.meshgrid(z, z.flip(0), indexing="xy")
    return torch.stack([z1.flatten(), z2.flatten()], -1)


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = NEIGHBOURS) -> float:
    """Accuracy of a k-nearest-neighbour vote (ties to the smallest label)."""
    nearest = torch.cdist(test_z, train_z).topk(k, largest=False).indices
    votes = torch.nn.functional.one_hot(train_y[nearest], int(train_y.max()) + 1).sum(1)
    return float((votes.argmax(-1) == test_y).float().mean())


def main(argv=None) -> dict:
    """Train the 2-D VAE; returns the results written to ``results.json``."""
    args = common.parser("manifold_2d", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    budget.z_dim = 2
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    vae, _, seconds = common.train_vae(dataset, {"name": "bernoulli"}, budget)
    idx = spread_subset(len(dataset.x_test), budget.test_images)
    x_test = dataset.x_test[idx]
    ev = evaluate_dataset(vae.model, vae.guide, x_test, num_samples=budget.num_samples, ks=(1,))
    with torch.no_grad():
        grid = vae.likelihood.mean(vae.decoder(quantile_grid(GRID)))
        test_z = vae.encoder(dataset.x_test)[0]
        train_z = vae.encoder(evaluation_split(dataset, "train"))[0]  # one fixed binarization
    s = ev.summary()
    results = {
        "experiment": "manifold_2d",
        "budget": budget.to_dict(),
        "test_images": len(x_test),
        "elbo": s["elbo"],
        "log_px": s["log_px"],
        "knn_accuracy": knn_accuracy(train_z, dataset.y_train, test_z, dataset.y_test),
        "neighbours": NEIGHBOURS,
        "posterior_mean_mean": test_z.mean(0).tolist(),
        "posterior_mean_std": test_z.std(0).tolist(),
        "train_seconds": seconds,
    }
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "manifold.png": grid_figure(
                grid, dataset.image_shape, "decoder means at prior quantiles", ncols=GRID
            ),
            "latent.png": latent_figure(test_z, dataset.y_test),
        },
    )


def latent_figure(z: torch.Tensor, labels: torch.Tensor):
    """Posterior means of the test digits, coloured by label, over the prior's contours."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    theta = torch.linspace(0, 6.3, 200)
    for radius in (1, 2, 3):
        ax.plot(radius * theta.cos(), radius * theta.sin(), color="grey", linewidth=0.6)
    ax.set_aspect("equal")
    ax.set_xlabel("z_1")
    ax.set_ylabel("z_2")
    ax.set_title("posterior means of the test digits (circles: 1, 2, 3 prior s.d.)", fontsize=9)
    fig.tight_layout()
    return fig


def table(r: dict) -> str:
    b = r["budget"]
    std = ", ".join(f"{v:.2f}" for v in r["posterior_mean_std"])
    mean = ", ".join(f"{v:.2f}" for v in r["posterior_mean_mean"])
    rows = [
        ["test ELBO (nats per image)", common.mean_se(r["elbo"])],
        [
            "test log P(X) (nats per image)",
            common.mean_se(r["log_px"]),
        ],
        [
            f"{r['neighbours']}-NN accuracy on the 2-D posterior means",
            f"{100 * r['knn_accuracy']:.1f}%",
        ],
        ["posterior means: mean per dimension", mean],
        ["posterior means: s.d. per dimension", std],
    ]
    return (
        f"\nmnist5k VAE with a 2-D latent (dynamic binarization, Bernoulli, "
        f"784-{b['hidden_dims'][0]}-2, {b['epochs']} epochs, seed {b['seed']}), one run; "
        f"{r['test_images']} test images, K = {b['num_samples']}.\n\n"
        + markdown_table(["quantity", "value"], rows)
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
