"""Labels for a few images: the semi-supervised VAE (M2) against a classifier of the
labels alone.

Kingma, Rezende, Mohamed and Welling (2014) train M2, P(y)P(z)P(X|y, z) with the guide
Q(y|X)Q(z|X, y), on every image and the labels of a few: the label is observed where it
is known and summed out where it is not, and Q(y|X) becomes a classifier that the
unlabelled images train too. Does it classify better than the same network trained on
the labelled images alone?

On mnist5k (4,000 training and 1,000 test images, dynamic binarization, Bernoulli
likelihood), for LABEL_COUNTS labels (the same number of each class) and SEEDS (each
seed draws its own labelled images, ``label_seed = seed``, and its own initial weights):

- ``M2``: ``--model ssvae`` with the default 784-400-20 networks and ``alpha`` 50,
  trained by TraceEnum_ELBO for the budget's epochs;
- ``classifier alone``: the same classifier network (784-400-10), trained by
  cross-entropy on the labelled images alone (binarized afresh each step) for as many
  Adam steps as M2 takes.

Per row: the test error of each, over the seeds; M2's test ELBO and seconds per epoch.
Then PROBES: at the fewest labels and the first seed, M2 with ten times the weight on
the labels, and M2 trained six times as long, each beside the classifier alone at the
same number of steps. Figures: each class drawn in the same style (one z per row), and
test images' styles carried to every class (z from Q(z|X, y) at the predicted class,
decoded with each y).

Usage: ``python experiments/semi_supervised.py [--quick] [--out results/semi_supervised]``
"""

from __future__ import annotations

import math
import sys
import time

import common
import pyro
import torch
import torch.nn.functional as F

from pyro_vae import TrainConfig, fit
from pyro_vae import data as data_mod
from pyro_vae.evaluate import mean_and_stderr
from pyro_vae.models import SSVAE
from pyro_vae.plots import labelled_rows_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Labels for a few images: the semi-supervised VAE (M2) against a classifier alone"
PAGE = "semi_supervised.md"
MINUTES = 24
ORDER = 17

LABEL_COUNTS = (100, 600, 1000)
QUICK_LABEL_COUNTS = (10, 20)
SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)
ALPHA = 50.0
BATCH_SIZE = 128
#: M2 at the fewest labels and the first seed with other settings: (name, alpha, epochs
#: as a multiple of the budget's)
PROBES = (("alpha 500", 500.0, 1), ("6 x the epochs", ALPHA, 6))
#: styles and test images in the figures
STYLES, ANALOGIES = 6, 6


def main(argv=None) -> dict:
    """Train M2 and the classifier for every label count and seed; returns the results."""
    args = common.parser("semi_supervised", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    seeds = QUICK_SEEDS if args.quick else SEEDS
    if args.seed != 0:
        seeds = tuple(args.seed + s for s in seeds)
    counts = QUICK_LABEL_COUNTS if args.quick else LABEL_COUNTS
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    rows, figures = [], {}
    for labels in counts:
        runs = []
        for seed in seeds:
            model, history, seconds = train_m2(dataset, budget, labels, seed)
            baseline = train_classifier(model, dataset, budget, seed)
            run = {
                "seed": seed,
                "m2_error": test_error(model.classifier, dataset),
                "classifier_error": test_error(baseline, dataset),
                "test_elbo": history.test_elbo[-1],
                "epoch_seconds": sum(history.seconds) / len(history.seconds),
                "seconds": seconds,
            }
            runs.append(run)
            print(
                f"{labels} labels, seed {seed}: M2 error {run['m2_error']:.4f}, classifier "
                f"alone {run['classifier_error']:.4f}, {run['epoch_seconds']:.2f} s/epoch",
                flush=True,
            )
            if seed == seeds[0] and labels == counts[-1]:
                figures = style_figures(model, dataset)
        rows.append(summarize(labels, runs))
    probes = [probe(dataset, budget, counts[0], seeds[0], *p) for p in PROBES]
    results = {
        "experiment": "semi_supervised",
        "budget": {**budget.to_dict(), "seeds": list(seeds)},
        "alpha": ALPHA,
        "batch_size": BATCH_SIZE,
        "test_images": len(dataset.x_test),
        "rows": rows,
        "probes": probes,
    }
    return common.finish(args.out, results, table(results), figures)


def probe(dataset, budget: common.Budget, labels: int, seed: int, name, alpha, times) -> dict:
    """M2 with ``alpha`` for ``times`` the budget's epochs, and the classifier alone for as
    many steps, at ``labels`` labels drawn with ``seed``."""
    longer = common.Budget(**{**budget.to_dict(), "epochs": budget.epochs * times})
    model, history, _ = train_m2(dataset, longer, labels, seed, alpha)
    baseline = train_classifier(model, dataset, longer, seed)
    out = {
        "name": name,
        "labels": labels,
        "seed": seed,
        "alpha": alpha,
        "epochs": longer.epochs,
        "m2_error": test_error(model.classifier, dataset),
        "classifier_error": test_error(baseline, dataset),
        "test_elbo": history.test_elbo[-1],
    }
    print(f"{name}: M2 error {out['m2_error']:.4f}, alone {out['classifier_error']:.4f}")
    return out


def train_m2(dataset, budget: common.Budget, labels: int, seed: int, alpha: float = ALPHA):
    """M2 with ``labels`` labels drawn with ``seed``, trained for ``budget.epochs``."""
    pyro.set_rng_seed(seed)
    model = SSVAE(
        dataset.x_dim,
        num_classes=10,
        z_dim=budget.z_dim,
        hidden_dims=budget.hidden_dims,
        image_shape=dataset.image_shape,
        labels=labels,
        alpha=alpha,
        label_seed=seed,
    )
    data = model.training_data(dataset)
    config = TrainConfig(epochs=budget.epochs, seed=seed, batch_size=BATCH_SIZE)
    t0 = time.perf_counter()
    history = fit(
        model, data.train, data.test, config=config, batch_transform=data.transforms, progress=False
    )
    return model.eval(), history, time.perf_counter() - t0


def train_classifier(m2: SSVAE, dataset, budget: common.Budget, seed: int) -> torch.nn.Module:
    """A fresh copy of M2's classifier network trained by cross-entropy on M2's labelled
    images alone, for as many Adam steps (learning rate 1e-3) as M2 took."""
    from pyro_vae.networks import MLP

    torch.manual_seed(seed)
    net = MLP(dataset.x_dim, budget.hidden_dims, 10)
    chosen = m2.labelled_indices(dataset.y_train)
    x, y = dataset.x_train[chosen], dataset.y_train[chosen]
    steps = budget.epochs * math.ceil(len(dataset.x_train) / BATCH_SIZE)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(len(x), (min(BATCH_SIZE, len(x)),), generator=g)
        batch = torch.bernoulli(x[pick], generator=g)  # binarized afresh, as M2's images
        loss = F.cross_entropy(net(batch), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def test_error(classifier: torch.nn.Module, dataset) -> float:
    """The share of the (fixed-binarization) test images whose argmax class is wrong."""
    return float((classifier(dataset.x_test).argmax(-1) != dataset.y_test).double().mean())


def summarize(labels: int, runs: list[dict]) -> dict:
    """One row: each quantity's mean and standard error over the seeds, and the seeds'
    own values."""

    def over_seeds(key: str) -> dict:
        values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
        return {**mean_and_stderr(values), "seeds": values.tolist()}

    return {
        "labels": labels,
        "m2_error": over_seeds("m2_error"),
        "classifier_error": over_seeds("classifier_error"),
        "test_elbo": over_seeds("test_elbo"),
        "epoch_seconds": over_seeds("epoch_seconds")["mean"],
    }


def _percent(value: dict) -> str:
    if len(value["seeds"]) < 2 or math.isnan(value["stderr"]):
        return f"{100 * value['mean']:.2f}"
    return f"{100 * value['mean']:.2f} ± {100 * value['stderr']:.2f}"


def table(results: dict) -> str:
    b = results["budget"]
    seeds = ", ".join(str(s) for s in b["seeds"])
    rows = [
        [
            f"{r['labels']:,}",
            _percent(r["m2_error"]),
            _percent(r["classifier_error"]),
            common.mean_se(r["test_elbo"]),
            f"{r['epoch_seconds']:.2f}",
        ]
        for r in results["rows"]
    ]
    return (
        f"\nmnist5k (4,000 training images, {results['test_images']:,} test images), dynamic "
        f"binarization, Bernoulli likelihood; M2 with 784-"
        f"{'-'.join(str(h) for h in b['hidden_dims'])}-{b['z_dim']} networks and alpha "
        f"{results['alpha']:g}, {b['epochs']} epochs of TraceEnum_ELBO in batches of "
        f"{results['batch_size']}; the classifier alone is M2's classifier network trained on "
        "the labelled images for as many steps. Seeds "
        f"{seeds}, each with its own labelled images; test error in percent, mean ± s.e. "
        "over the seeds.\n\n"
        + markdown_table(
            ["labels", "M2 test error", "classifier alone", "M2 test ELBO", "M2 s / epoch"],
            rows,
        )
        + f"\nAt {results['probes'][0]['labels']} labels and seed {results['probes'][0]['seed']}, "
        "M2 with other settings, beside the classifier alone at the same number of steps "
        "(test error in percent):\n\n"
        + markdown_table(
            ["M2", "alpha", "epochs", "M2 test error", "classifier alone", "M2 test ELBO"],
            [
                [
                    p["name"],
                    f"{p['alpha']:g}",
                    str(p["epochs"]),
                    f"{100 * p['m2_error']:.2f}",
                    f"{100 * p['classifier_error']:.2f}",
                    f"{p['test_elbo']:.2f}",
                ]
                for p in results["probes"]
            ],
        )
        + "\n"
    )


@torch.no_grad()
def style_figures(model: SSVAE, dataset) -> dict:
    """``styles.png``: every class in STYLES styles (z ~ N(0, I), one per row);
    ``analogies.png``: ANALOGIES test images, each with its style carried to every class."""
    generator = torch.Generator().manual_seed(0)
    drawn = model.sample(STYLES * 10, generator=generator).reshape(STYLES, 10, -1)
    styles = [(f"z {i + 1}", images) for i, images in enumerate(drawn)]
    x = dataset.x_test[spread_subset(len(dataset.x_test), ANALOGIES)]
    label = model.classify(x)
    one_hot = F.one_hot(label, 10).float()
    center = model.guide_family.center(
        model.recognition, model.recognition(torch.cat([x, one_hot], -1))
    )
    classes = torch.arange(10).expand(len(x), 10)
    carried = model.likelihood.mean(model._decode(center.unsqueeze(1), classes))
    analogies = [(f"test {i + 1}", torch.cat([x[i : i + 1], carried[i]])) for i in range(len(x))]
    shape = dataset.image_shape
    return {
        "styles.png": labelled_rows_figure(
            styles, shape, "M2: each row one style z, the classes 0 to 9 across"
        ),
        "analogies.png": labelled_rows_figure(
            analogies,
            shape,
            "a test image (left), then its style (z from Q(z|X, y)) drawn as 0 to 9",
        ),
    }


if __name__ == "__main__":
    main(sys.argv[1:])
