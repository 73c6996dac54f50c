"""Shared pieces of the experiment scripts: options, training, evaluation, output.

Each experiment is ``python experiments/NAME.py [--quick] [--out DIR]`` with a
``main(argv)`` that writes ``results.json``, ``results.md`` and figures to its
folder (default ``results/NAME``). ``--quick`` shrinks every budget so that a
run takes seconds: for the test suite and a first look, not for conclusions.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import torch

from pyro_vae import VAE, TrainConfig, fit, get_likelihood
from pyro_vae import data as data_mod
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.io import write_json, write_text
from pyro_vae.plots import save_figure
from pyro_vae.splits import batch_transform, spread_subset
from pyro_vae.units import comparable_bits_per_dim


@dataclass
class Budget:
    """What one experiment spends per model: the same for every model it compares."""

    epochs: int = 50  # passes over the 4,000 training images
    z_dim: int = 20
    hidden_dims: tuple[int, ...] = (400,)
    num_samples: int = 5000  # importance samples per test image for log P(X)
    test_images: int = 1000  # evenly spaced test images scored
    seed: int = 0
    is_quick: bool = False  # a --quick budget: checks the code, not the claims
    #: options that changed the defaults; the documented results have none
    overrides: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def quick(cls, seed: int = 0) -> Budget:
        return cls(
            epochs=1,
            z_dim=4,
            hidden_dims=(32,),
            num_samples=20,
            test_images=40,
            seed=seed,
            is_quick=True,
        )


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """Options every experiment takes."""
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=description)
    p.add_argument(
        "--out", type=Path, help=f"output folder (default results/{name}, or results/quick/{name})"
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets: seconds, not conclusions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the budget's epochs")
    p.add_argument("--num-samples", type=int, help="override K, importance samples per image")
    p.add_argument("--test-images", type=int, help="override the number of test images scored")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.set_defaults(experiment=name)
    return p


def budget_from(args) -> Budget:
    """The budget the options ask for; also settles ``args.out`` (quick runs go to
    ``results/quick/NAME`` so that they never overwrite a full run's results) and the
    thread count."""
    b = Budget.quick(args.seed) if args.quick else Budget(seed=args.seed)
    for name in ("epochs", "num_samples", "test_images"):
        if getattr(args, name) is not None:
            setattr(b, name, getattr(args, name))
            b.overrides.append(name)
    if args.seed != 0:
        b.overrides.append("seed")
    if args.out is None:
        args.out = Path("results") / ("quick" if args.quick else "") / args.experiment
    torch.set_num_threads(args.threads)
    return b


def train_vae(
    dataset: data_mod.Dataset,
    likelihood: dict,
    budget: Budget,
    vae_class: type = VAE,
    vae_options: dict | None = None,
    **train_options,
):
    """Train a VAE with ``likelihood`` on ``dataset`` within ``budget``.

    :param vae_class: :class:`~pyro_vae.VAE` or a subclass; ``vae_options`` are more
        constructor arguments.
    :param train_options: more :class:`~pyro_vae.TrainConfig` fields (objective, ...).
    :returns: ``(vae, history, seconds)``, the VAE in eval mode.
    """
    pyro.set_rng_seed(budget.seed)
    vae = vae_class(
        dataset.x_dim,
        z_dim=budget.z_dim,
        hidden_dims=budget.hidden_dims,
        likelihood=get_likelihood(**likelihood),
        image_shape=dataset.image_shape,
        **(vae_options or {}),
    )
    return train_model(vae, dataset, budget, **train_options)


def train_model(model, dataset: data_mod.Dataset, budget: Budget, **train_options):
    """Train ``model`` (any :class:`~pyro_vae.models.Model`, built by the caller after
    ``pyro.set_rng_seed(budget.seed)``) on ``dataset`` for ``budget.epochs``.

    :param train_options: more :class:`~pyro_vae.TrainConfig` fields (objective, ...).
    :returns: ``(model, history, seconds)``, the model in eval mode.
    """
    t0 = time.perf_counter()
    history = fit(
        model,
        dataset.x_train,
        dataset.x_test,
        config=TrainConfig(epochs=budget.epochs, seed=budget.seed, **train_options),
        batch_transform=batch_transform(dataset),
        progress=False,
    )
    seconds = time.perf_counter() - t0
    return model.eval(), history, seconds


def train_and_score(dataset: data_mod.Dataset, likelihood: dict, budget: Budget):
    """Train a VAE with ``likelihood`` on ``dataset`` and score its test images.

    :returns: ``(vae, history, evaluation, test_images, seconds)``.
    """
    vae, history, seconds = train_vae(dataset, likelihood, budget)
    x = dataset.x_test[spread_subset(len(dataset.x_test), budget.test_images)]
    pyro.set_rng_seed(budget.seed)
    ks = tuple(k for k in (1, 5, 50, 500) if k <= budget.num_samples)
    evaluation = evaluate_dataset(vae.model, vae.guide, x, num_samples=budget.num_samples, ks=ks)
    return vae, history, evaluation, x, seconds


#: when this experiment's process imported this module: its wall time starts here
STARTED = time.perf_counter()


def write_results(out: Path, results: dict, markdown: str) -> None:
    """``results.json`` (with the process's ``wall_seconds`` so far) and ``results.md``
    in ``out``, written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "wall_seconds": time.perf_counter() - STARTED}
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown)


def finish(out: Path, results: dict, markdown: str, figures: dict | None = None) -> dict:
    """The end of every experiment: ``results.json``, ``results.md`` and the figures
    (``{file name: matplotlib figure}``) in ``out``, each written atomically; the table
    printed. Returns ``results``."""
    write_results(out, results, markdown)
    for name, figure in (figures or {}).items():
        save_figure(figure, out / name)
    print(markdown, end="")
    return results


def test_elbo_curves(ax, rows: list[dict]) -> None:
    """Each row's test ELBO over training on ``ax`` (``rows`` hold ``label`` and
    ``test_elbo_curve``, the mean over seeds after every epoch); markers where a quick
    run has a point or two, and the first epochs' plunge out of view in a long run."""
    for r in rows:
        curve = r["test_elbo_curve"]
        marker = "o" if len(curve) < 6 else None
        ax.plot(range(1, len(curve) + 1), curve, marker=marker, label=r["label"])
    if len(rows[0]["test_elbo_curve"]) > 5:
        low = min(r["test_elbo_curve"][4] for r in rows)
        high = max(max(r["test_elbo_curve"]) for r in rows)
        ax.set_ylim(low, high + 0.05 * (high - low))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test ELBO, nats per image")
    ax.set_title("test ELBO over training (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def bits(vae, dataset, value):
    """Bits per dimension of a nats-per-image value, or None where not comparable."""
    return comparable_bits_per_dim(vae, dataset, value)


def fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean_se(value: dict, digits: int = 2, sign: str = "") -> str:
    """``"mean ± s.e."`` of a ``{"mean": ..., "stderr": ...}`` summary
    (:func:`~pyro_vae.evaluate.mean_and_stderr`), both to ``digits`` decimals;
    ``sign="+"`` writes the mean's sign even where it is positive."""
    return f"{value['mean']:{sign}.{digits}f} ± {value['stderr']:.{digits}f}"
