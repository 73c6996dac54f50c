"""Doersch section 3: conditional completion with a CVAE against a deterministic regressor.

For each task (``pyro_vae.tasks``: centre column, 1/2/3 quadrants, class label) a
regressor and CVAEs with the tutorial's fixed prior and with a learned prior
network P(z|X) (Sohn et al. 2015) are trained on the same mnist5k split and
budget. Y is the statically binarized image part with a Bernoulli likelihood; the
centre column X is re-binarized at random every pass, as in the tutorial.

Reported per test image (nats): the regressor's exact log P(Y|X); the CVAE's
importance-sampled log P(Y|X) with z from Q(z|X,Y) and, as Sohn et al. also
report, with z from the prior P(z|X), both with K samples; and the 10-particle
negative ELBO that Pyro's CVAE tutorial reports, an upper bound on -log P(Y|X).
One figure per task: ground truth, the regressor's output and CVAE samples, with
the condition drawn in colour.

Usage: ``python experiments/cvae_completion.py [--quick] [--out results/cvae_completion]``
"""

from __future__ import annotations

import sys

import common
import pyro
import torch

from pyro_vae import TrainConfig, fit, mean_elbo
from pyro_vae import data as data_mod
from pyro_vae.cvae import CVAE, Regressor
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.plots import save_figure
from pyro_vae.runs import spread_subset
from pyro_vae.tasks import TASKS, binarize_condition, make_task, merge, split

PRIORS = ("fixed", "learned")


def task_data(task, grey: data_mod.Dataset, binary: data_mod.Dataset):
    """Train and test ``(X, Y)``; X from grey levels for the centre column (re-binarized
    each pass), else from the binarized images; Y always binarized."""
    out = []
    for split_name in ("train", "test"):
        g, b = getattr(grey, f"x_{split_name}"), getattr(binary, f"x_{split_name}")
        labels = getattr(grey, f"y_{split_name}")
        x, y = split(task, b, labels)
        if task.name == "center-column":
            x = split(task, g)[0]
            if split_name == "test":  # one fixed sample for scoring
                x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
        out.append((x, y))
    return out


def main(argv=None) -> dict:
    """Run every task; returns the results written to ``results.json``."""
    args = common.parser("cvae_completion", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    grey = data_mod.load("mnist5k")
    binary = data_mod.load("mnist5k", binarize="static")
    results = {"experiment": "cvae_completion", "budget": budget.to_dict(), "tasks": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in TASKS:
        task = make_task(name, grey.image_shape)
        (x, y), (xt, yt) = task_data(task, grey, binary)
        idx = spread_subset(len(xt), budget.test_images)
        xt, yt = xt[idx], yt[idx]
        transform = binarize_condition if name == "center-column" else None
        config = TrainConfig(epochs=budget.epochs, seed=budget.seed)
        pyro.set_rng_seed(budget.seed)
        reg = Regressor(task.x_dim, task.y_dim, hidden_dims=budget.hidden_dims)
        fit(reg, (x, y), config=config, batch_transform=transform, progress=False)
        row = {
            "task": name,
            "x_dim": task.x_dim,
            "y_dim": task.y_dim,
            "regressor": mean_and_stderr(reg.log_likelihood(xt, yt)),
        }
        cvaes = {}
        for prior in PRIORS:
            pyro.set_rng_seed(budget.seed)
            cvae = CVAE(
                task.x_dim,
                task.y_dim,
                z_dim=budget.z_dim,
                hidden_dims=budget.hidden_dims,
                prior=prior,
            )
            fit(cvae, (x, y), config=config, batch_transform=transform, progress=False)
            cvae.eval()
            pyro.set_rng_seed(budget.seed)
            guided = evaluate_dataset(
                cvae.model, cvae.guide, (xt, yt), num_samples=budget.num_samples, ks=(1,)
            )
            from_prior = evaluate_dataset(
                cvae.model,
                None,
                (xt, yt),
                num_samples=budget.num_samples,
                ks=(1,),
                proposal="prior",
            )
            neg_elbo_10 = -mean_elbo(cvae.model, cvae.guide, (xt, yt), num_particles=10)
            row[f"cvae_{prior}"] = {
                "log_p_y_given_x": mean_and_stderr(guided.log_px),
                "log_p_y_given_x_prior_sampling": mean_and_stderr(from_prior.log_px),
                "elbo": mean_and_stderr(guided.elbo),
                "negative_elbo_10_particles": neg_elbo_10,
            }
            cvaes[prior] = cvae
        results["tasks"].append(row)
        save_figure(
            completion_figure(task, xt[:8], yt[:8], reg, cvaes["fixed"], budget.seed),
            args.out / f"{name}.png",
        )
        print(
            f"{name}: regressor {row['regressor']['mean']:.1f}, CVAE (fixed prior) "
            f"{row['cvae_fixed']['log_p_y_given_x']['mean']:.1f} nats",
            flush=True,
        )
    common.write_results(args.out, results, table(results))
    print(table(results), end="")
    return results


def _rgb(task, x, y):
    """Images as RGB with the condition X tinted blue and Y in grey."""
    image = merge(task, x, y).clamp(0, 1).reshape(-1, 28, 28)
    rgb = image.unsqueeze(-1).repeat(1, 1, 1, 3)
    if task.name != "label":
        m = task.x_mask.reshape(28, 28)
        rgb[:, m] = rgb[:, m] * torch.tensor([0.3, 0.6, 1.0]) + torch.tensor([0.0, 0.1, 0.3])
    return rgb.clamp(0, 1)


@torch.no_grad()
def completion_figure(task, x, y, reg, cvae, seed: int):
    """Rows: ground truth, regressor output, three CVAE samples; one column per test image."""
    from matplotlib.figure import Figure

    torch.manual_seed(seed)
    samples = cvae.complete(x, num_samples=3)
    rows = [("ground truth", _rgb(task, x, y)), ("regressor", _rgb(task, x, reg.predict(x)))]
    rows += [(f"CVAE sample {i + 1}", _rgb(task, x, s)) for i, s in enumerate(samples)]
    fig = Figure(figsize=(1.2 * len(x) + 1.5, 1.3 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), len(x), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image.numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    condition = "the label" if task.name == "label" else "blue pixels"
    fig.suptitle(f"{task.name}: X = {condition}, Y = the rest", fontsize=10)
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b = results["budget"]
    lines = [
        f"\nmnist5k, Y binarized (Bernoulli), {b['test_images']} test images, "
        f"K = {b['num_samples']}; {b['epochs']} epochs, z_dim {b['z_dim']}, seed {b['seed']}, "
        "one run. log P(Y|X) in nats per image (mean ± s.e.); the regressor's is exact; "
        "-ELBO(10) is the 10-particle negative ELBO.\n\n",
        "| task | regressor | CVAE, z from Q | CVAE, z from the prior | CVAE -ELBO(10) "
        "| learned prior, z from Q | learned prior, z from the prior |\n"
        "|---|---|---|---|---|---|---|\n",
    ]
    for r in results["tasks"]:
        fixed, learned = r["cvae_fixed"], r["cvae_learned"]
        lines.append(
            f"| {r['task']} | {r['regressor']['mean']:.1f} ± {r['regressor']['stderr']:.1f} "
            f"| {fixed['log_p_y_given_x']['mean']:.1f} ± {fixed['log_p_y_given_x']['stderr']:.1f} "
            f"| {fixed['log_p_y_given_x_prior_sampling']['mean']:.1f} "
            f"| {fixed['negative_elbo_10_particles']:.1f} "
            f"| {learned['log_p_y_given_x']['mean']:.1f} "
            f"| {learned['log_p_y_given_x_prior_sampling']['mean']:.1f} |\n"
        )
    return "".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
