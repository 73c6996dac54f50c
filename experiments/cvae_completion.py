"""Doersch section 3: conditional completion with a CVAE against a deterministic regressor.

For each task (``pyro_vae.tasks``: centre column, 1/2/3 quadrants, class label) a
regressor and CVAEs with the tutorial's fixed prior and with a learned prior
network P(z|X) (Sohn et al. 2015) are trained on the same mnist5k split and
budget. Y is the image part, binarized afresh every pass (the test split holds one
fixed binarization), with a Bernoulli likelihood; the centre column X is
re-binarized at random every pass, as in the tutorial.

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

from pyro_vae import TrainConfig, fit, mean_elbo, plots
from pyro_vae import data as data_mod
from pyro_vae.evaluate import evaluate_dataset, mean_and_stderr
from pyro_vae.models import CVAE, Regressor
from pyro_vae.models.cvae import PRIORS
from pyro_vae.plots import save_figure
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table
from pyro_vae.tasks import TASKS, conditional_data

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Section 3: the conditional VAE"
PAGE = "cvae.md"
MINUTES = 25
ORDER = 11


def main(argv=None) -> dict:
    """Run every task; returns the results written to ``results.json``."""
    args = common.parser("cvae_completion", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    dataset = data_mod.load("mnist5k", binarize="dynamic")
    results = {"experiment": "cvae_completion", "budget": budget.to_dict(), "tasks": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in TASKS:
        cond = conditional_data(name, dataset)
        task, (x, y), (xt, yt) = cond.task, cond.train, cond.test
        idx = spread_subset(len(xt), budget.test_images)
        xt, yt = xt[idx], yt[idx]
        config = TrainConfig(epochs=budget.epochs, seed=budget.seed)
        pyro.set_rng_seed(budget.seed)
        reg = Regressor(task.x_dim, task.y_dim, hidden_dims=budget.hidden_dims)
        fit(reg, (x, y), config=config, batch_transform=cond.transforms, progress=False)
        row = {
            "task": name,
            "x_dim": task.x_dim,
            "y_dim": task.y_dim,
            "regressor": mean_and_stderr(reg.exact_log_likelihood(xt, yt)),
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
            fit(cvae, (x, y), config=config, batch_transform=cond.transforms, progress=False)
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
        show = spread_subset(len(xt), 8)  # one image from every part of the split
        save_figure(
            completion_figure(task, xt[show], yt[show], reg, cvaes, budget.seed),
            args.out / f"{name}.png",
        )
        print(
            f"{name}: regressor {row['regressor']['mean']:.1f}, CVAE (fixed prior) "
            f"{row['cvae_fixed']['log_p_y_given_x']['mean']:.1f} nats",
            flush=True,
        )
    return common.finish(args.out, results, table(results))


@torch.no_grad()
def completion_figure(task, x, y, reg, cvaes: dict, seed: int):
    """Rows: ground truth, the regressor's mean, then two samples of the CVAE with each
    prior; one column per test image."""
    rows = [("ground truth", y), ("regressor", reg.predict(x))]
    for prior, cvae in cvaes.items():
        torch.manual_seed(seed)
        samples = cvae.complete(x, num_samples=2)
        rows += [(f"CVAE, {prior} prior, {i + 1}", s) for i, s in enumerate(samples)]
    return plots.completion_figure(task, x, rows)


def table(results: dict) -> str:
    """A summary across tasks, then one table per task with standard errors."""
    b = results["budget"]
    summary = [
        [
            r["task"],
            common.mean_se(r["regressor"]),
            common.mean_se(r["cvae_fixed"]["log_p_y_given_x"]),
            common.mean_se(r["cvae_learned"]["log_p_y_given_x"]),
        ]
        for r in results["tasks"]
    ]
    lines = [
        f"\nmnist5k, Y binarized afresh each pass (Bernoulli), {b['test_images']} test images, "
        f"K = {b['num_samples']}; {b['epochs']} epochs, z_dim {b['z_dim']}, seed {b['seed']}, "
        "one run. log P(Y\\|X) in nats per image, mean ± standard error over test images; "
        "the regressor's is exact; -ELBO(10) is the negative ELBO with 10 particles that "
        "Pyro's CVAE tutorial reports (an upper bound on -log P(Y\\|X)).\n\n",
        markdown_table(
            ["task", "regressor", "CVAE (fixed prior)", "CVAE (learned prior)"], summary
        ),
    ]
    header = [
        "model",
        "log P(Y|X), z from Q(z|X,Y)",
        "log P(Y|X), z from the prior",
        "ELBO",
        "-ELBO(10)",
    ]
    for r in results["tasks"]:
        reg = common.mean_se(r["regressor"])
        rows = [["regressor (exact)", reg, reg, reg, f"{-r['regressor']['mean']:.2f}"]]
        for prior in ("fixed", "learned"):
            m = r[f"cvae_{prior}"]
            rows.append(
                [
                    f"CVAE, {prior} prior",
                    common.mean_se(m["log_p_y_given_x"]),
                    common.mean_se(m["log_p_y_given_x_prior_sampling"]),
                    common.mean_se(m["elbo"]),
                    f"{m['negative_elbo_10_particles']:.2f}",
                ]
            )
        lines += [
            f"\n**{r['task']}** (X: {r['x_dim']} values, Y: {r['y_dim']} pixels)\n\n",
            markdown_table(header, rows),
        ]
    return "".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
