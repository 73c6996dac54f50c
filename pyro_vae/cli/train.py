"""Command line: ``pyro-vae train``, ``sample``, ``complete`` and ``evaluate``.

Bad input (unknown names, unusable data, a mismatched checkpoint) prints one
``pyro-vae: error: ...`` line and exits with status 2; a diverged run exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_vae import __version__
from pyro_vae import data as data_mod
from pyro_vae.cvae import PRIORS
from pyro_vae.engine import ENGINES, OBJECTIVES
from pyro_vae.errors import TrainingDiverged, UsageError
from pyro_vae.evaluate import mean_elbo
from pyro_vae.io import write_json, write_text
from pyro_vae.likelihoods import LIKELIHOODS, SCALE_MODES, get_likelihood
from pyro_vae.runs import (
    MODELS,
    batch_transform,
    comparable_bits_per_dim,
    evaluation_split,
    load_run,
    resolve_device,
    spread_subset,
)
from pyro_vae.tasks import TASKS
from pyro_vae.train import History, TrainConfig, check_fit_inputs, fit
from pyro_vae.vae import VAE

MODEL_KINDS = tuple(MODELS)
#: defaults of ``pyro-vae train``; options default to None so that we can tell
#: which ones the user gave (for ``--resume``)
TRAIN_DEFAULTS: dict[str, Any] = {
    "model": "vae",
    "task": None,  # required for the conditional models
    "prior": "fixed",
    "dataset": "mnist5k",
    "data_dir": "data",
    "binarize": None,  # "dynamic" for bernoulli, "none" otherwise
    "dequantize": False,
    "likelihood": "bernoulli",
    "sigma": 0.1,
    "z_dim": 20,
    "hidden_dims": [400],
    **{f.name: f.default for f in fields(TrainConfig)},
}
#: options that may differ from the stored run on --resume
RESUME_MAY_CHANGE = {"epochs", "validate", "data_dir"}
#: files of a run folder (a VAE run draws samples and reconstructions, a
#: conditional run completions)
RUN_FILES = ("config.json", "checkpoint.pt", "history.json", "results.json", "results.md")
#: what --overwrite removes: the files of any earlier run and of the commands run on it
STALE_PATTERNS = (
    *RUN_FILES,
    "loss.png",
    "samples.png",
    "reconstructions.png",
    "completions*.png",
    "prior_samples_*.png",
    "bounds*.png",
    "eval*.json",
    "eval*.md",
)
FIGURES = {
    "vae": ("loss.png", "samples.png", "reconstructions.png"),
    "cvae": ("loss.png", "completions.png"),
    "regressor": ("loss.png", "completions.png"),
}
#: particles per data point for the final ELBO table
FINAL_ELBO_PARTICLES = 10


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyro-vae`` console script.

    :param argv: arguments without the program name; ``sys.argv[1:]`` by default.
    :returns: exit status (0 success, 1 training diverged, 2 bad input).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"pyro-vae: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an output path under a file, a read-only folder, ...
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="pyro-vae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pyro_vae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    d = TRAIN_DEFAULTS
    t = sub.add_parser(
        "train", help="train a VAE (or a conditional model) and write its run folder"
    )
    t.add_argument(
        "--model",
        choices=MODEL_KINDS,
        help="vae: P(z)P(X|z); cvae: P(z|X)P(Y|z,X) on a --task; regressor: the deterministic "
        "P(Y|X) baseline on a --task (default vae)",
    )
    t.add_argument(
        "--task",
        choices=TASKS,
        help="how a conditional model splits each image into the condition X and the target Y",
    )
    t.add_argument(
        "--prior",
        choices=PRIORS,
        help="the CVAE's P(z|X): fixed N(0, I) (Doersch) or learned (Sohn et al.) (default fixed)",
    )
    t.add_argument(
        "--dataset", help=f"one of {', '.join(data_mod.DATASETS)} (default {d['dataset']})"
    )
    t.add_argument("--data-dir", help="folder for torchvision data sets (default ./data)")
    t.add_argument(
        "--binarize",
        choices=data_mod.BINARIZE_MODES,
        help="default: dynamic for --likelihood bernoulli, none otherwise",
    )
    t.add_argument(
        "--dequantize",
        action="store_const",
        const=True,
        help="train and score continuous likelihoods on uniformly dequantized pixels "
        "(k + u) / levels, so that log-likelihoods convert to comparable bits per dimension",
    )
    t.add_argument(
        "--likelihood", choices=sorted(LIKELIHOODS), help=f"P(x|z) (default {d['likelihood']})"
    )
    t.add_argument(
        "--sigma",
        type=_scale,
        help="gaussian sigma / laplace scale: a number (fixed), or shared, per-pixel or "
        f"predicted (learned) (default {d['sigma']})",
    )
    t.add_argument("--z-dim", type=int, help=f"latent dimension (default {d['z_dim']})")
    t.add_argument(
        "--hidden-dims", type=_int_list, help="comma-separated hidden widths (default 400)"
    )
    t.add_argument(
        "--epochs", type=int, help=f"passes over the training split (default {d['epochs']})"
    )
    t.add_argument("--batch-size", type=int, help=f"(default {d['batch_size']})")
    t.add_argument("--lr", type=float, help=f"Adam step size (default {d['lr']})")
    t.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="elbo: Trace_ELBO; mean-field: TraceMeanField_ELBO (analytic KL); "
        "iwae: RenyiELBO(alpha=0) (default elbo)",
    )
    t.add_argument(
        "--num-particles", type=int, help="samples of z per data point per step (default 1)"
    )
    t.add_argument("--beta", type=float, help="KL weight (default 1)")
    t.add_argument(
        "--kl-warmup", type=float, help="epochs of linear KL warm-up from ~0 to beta (default 0)"
    )
    t.add_argument(
        "--engine",
        choices=ENGINES,
        help="fast: differentiable_loss + torch Adam; svi: pyro.infer.SVI (default fast)",
    )
    t.add_argument("--seed", type=int, help=f"(default {d['seed']})")
    t.add_argument(
        "--validate",
        action="store_const",
        const=True,
        help="check distribution arguments every step (slower)",
    )
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    t.add_argument(
        "--out", type=Path, help="run folder (default runs/DATASET-[MODEL-TASK-]LIKELIHOOD-TIME)"
    )
    t.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw images from a trained model's prior")
    s.add_argument("--run", type=Path, required=True, help="run folder written by `pyro-vae train`")
    s.add_argument(
        "-n", "--num-samples", type=int, default=64, help="number of samples (default 64)"
    )
    s.add_argument("--seed", type=int, default=0, help="(default 0)")
    s.add_argument("--out", type=Path, help="PNG path (default RUN/prior_samples_N.png)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    s.set_defaults(func=cmd_sample)

    from pyro_vae.cli_conditional import add_complete_parser
    from pyro_vae.cli_evaluate import add_evaluate_parser
    from pyro_vae.reproduce import add_reproduce_parser

    add_complete_parser(sub)
    add_evaluate_parser(sub)
    add_reproduce_parser(sub)
    return parser


def _scale(text: str) -> float | str:
    if text in SCALE_MODES:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or one of {', '.join(SCALE_MODES)}, got {text!r}"
        ) from None


def build_likelihood(options: dict[str, Any], dataset: data_mod.Dataset):
    """The likelihood that ``--likelihood`` and ``--sigma`` ask for, fitted to ``dataset``."""
    name = options["likelihood"]
    if name == "gaussian":
        return get_likelihood(name, sigma=options["sigma"])
    if name == "laplace":
        return get_likelihood(name, scale=options["sigma"])
    if name == "discretized-logistic":
        if dataset.levels is None:
            raise UsageError(
                f"the discretized-logistic likelihood needs the data's number of grey levels, "
                f"which {dataset.name} does not record; store pixels as 8-bit integers"
            )
        return get_likelihood(name, levels=dataset.levels)
    return get_likelihood(name)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return values


def run_config(options: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a run, from resolved options and the model's config."""
    train_keys = [f.name for f in fields(TrainConfig)]
    data = {k: options[k] for k in ("dataset", "binarize", "dequantize", "data_dir", "task")}
    data["data_dir"] = str(Path(data["data_dir"]).resolve())  # runs are evaluated from anywhere
    return {
        "pyro_vae_version": __version__,
        "data": data,
        "model": model,
        "train": {k: options[k] for k in train_keys},
    }


def _options_from_config(config: dict[str, Any]) -> dict[str, Any]:
    model = config["model"]
    likelihood = model["likelihood"]
    return {
        "task": None,
        **config["data"],
        **config["train"],
        "model": model.get("kind", "vae"),
        "prior": model.get("prior", TRAIN_DEFAULTS["prior"]),
        "likelihood": likelihood["name"],
        "sigma": likelihood.get("sigma", likelihood.get("scale", TRAIN_DEFAULTS["sigma"])),
        "z_dim": model.get("z_dim", TRAIN_DEFAULTS["z_dim"]),
        "hidden_dims": list(model["hidden_dims"]),
    }


def check_model_options(given: dict[str, Any], options: dict[str, Any]) -> None:
    """The options that go with ``--model``: a task for the conditional models and
    none for the VAE, a prior only for the CVAE, no latent size for the regressor.

    :raises UsageError: naming the option and the fix.
    """
    kind = options["model"]
    if kind == "vae":
        for option in ("task", "prior"):
            if option in given:
                raise UsageError(
                    f"--{option} applies to the conditional models; add --model cvae "
                    f"(or --model regressor for --task), or drop --{option}"
                )
        return
    if options["task"] is None:
        raise UsageError(f"--model {kind} needs --task, one of {', '.join(TASKS)}")
    if kind == "regressor":
        # options about z: the prior, its size, the KL weight, the bound's samples
        defaults = {"objective": "elbo", "num_particles": 1, "beta": 1.0, "kl_warmup": 0.0}
        for option in ("prior", "z_dim", *defaults):
            if option in given and given[option] != defaults.get(option, object()):
                flag = "--" + option.replace("_", "-")
                raise UsageError(
                    f"{flag} does not apply to --model regressor, which has no latent "
                    f"variable; drop {flag} or use --model cvae"
                )


def cmd_train(args: argparse.Namespace) -> int:
    """``pyro-vae train``: see ``pyro-vae train --help``."""
    given = {k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS and v is not None}
    device = resolve_device(args.device)
    out = args.out
    checkpoint = out / "checkpoint.pt" if out is not None else None

    if args.resume:
        if out is None or not checkpoint.is_file():
            raise UsageError(
                f"--resume needs --out pointing at a run folder with checkpoint.pt (got {out})"
            )
        from pyro_vae import checkpoint as ckpt_io

        stored_config = ckpt_io.load(checkpoint)["config"]
        if "data" not in stored_config:
            raise UsageError(
                f"{checkpoint} was written by fit() without a data configuration; "
                "resume it from Python with fit(..., resume=True)"
            )
        stored = _options_from_config(stored_config)
        changed = [
            f"--{k.replace('_', '-')} {given[k]} (run has {stored[k]})"
            for k in given
            if k not in RESUME_MAY_CHANGE and given[k] != stored.get(k)
        ]
        if changed:
            raise UsageError(
                f"cannot resume {out} with different settings: {', '.join(changed)}. "
                "Drop these options to resume, or train a new run with another --out."
            )
        options = {**stored, **given}
    else:
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            parts = [given.get("dataset", TRAIN_DEFAULTS["dataset"])]
            if given.get("model", "vae") != "vae":
                parts += [given["model"], given.get("task") or "notask"]
            parts += [given.get("likelihood", TRAIN_DEFAULTS["likelihood"]), stamp]
            out = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))
            checkpoint = out / "checkpoint.pt"
        elif out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder for the run")
        elif checkpoint.exists() and not args.overwrite:
            raise UsageError(
                f"{out} already holds a run; pass --resume to continue it, --overwrite to "
                "replace it, or choose another --out"
            )
        options = {**TRAIN_DEFAULTS, **given}
        if options["binarize"] is None:
            options["binarize"] = "dynamic" if options["likelihood"] == "bernoulli" else "none"

    check_model_options(given, options)
    train_config = TrainConfig(**{f.name: options[f.name] for f in fields(TrainConfig)})
    train_config.check()
    dataset = data_mod.load(
        options["dataset"],
        binarize=options["binarize"],
        dequantize=options["dequantize"],
        data_dir=options["data_dir"],
    )
    likelihood = build_likelihood(options, dataset)
    dataset = dataset.to(device)
    pyro.set_rng_seed(train_config.seed)  # the initial weights belong to the seeded run
    cond = None
    if options["model"] == "vae":
        vae = VAE(
            dataset.x_dim,
            z_dim=options["z_dim"],
            hidden_dims=options["hidden_dims"],
            likelihood=likelihood,
            image_shape=dataset.image_shape,
        ).to(device)
        train, test, transform = dataset.x_train, dataset.x_test, batch_transform(dataset)
    else:
        from pyro_vae.cli_conditional import build_conditional

        vae, cond = build_conditional(options, dataset, likelihood)
        vae = vae.to(device)
        train, test, transform = cond.train, cond.test, cond.transforms
    config = run_config(options, vae.config())
    # every check fit() makes, before any file is written
    check_fit_inputs(vae, train, test, train_config, transform)
    files = RUN_FILES + FIGURES[options["model"]]
    if not args.resume:
        if args.overwrite and out.exists():
            for pattern in STALE_PATTERNS:
                for stale in out.glob(pattern):
                    stale.unlink(missing_ok=True)
        write_json(out / "config.json", config)

    what = "" if cond is None else f" {options['model']}, task {cond.task.name},"
    print(
        f"pyro-vae: training{what} on {dataset.name} ({len(dataset.x_train)} train, "
        f"{len(dataset.x_test)} test, binarize={dataset.binarize}) -> {out}"
    )
    history = fit(
        vae,
        train,
        test,
        config=train_config,
        batch_transform=transform,
        checkpoint=checkpoint,
        resume=args.resume,
        run_config=config,
        progress=not args.no_progress,
    )
    write_json(out / "history.json", history.to_dict())
    results = _final_results(vae, dataset, train_config, history, cond)
    write_json(out / "results.json", results)
    table = _results_table(results)
    write_text(out / "results.md", table)
    if cond is None:
        _write_figures(vae, dataset, history, out, seed=train_config.seed)
    else:
        from pyro_vae import plots
        from pyro_vae.cli_conditional import completion_rows

        plots.save_figure(
            plots.history_figure(history, f"{dataset.name}, {cond.task.name}: ELBO per image"),
            out / "loss.png",
        )
        x, rows = completion_rows(
            vae, cond.test, num_inputs=8, num_samples=5, seed=train_config.seed
        )
        plots.save_figure(plots.completion_figure(cond.task, x, rows), out / "completions.png")
    print(table, end="")
    print(f"pyro-vae: wrote {out}/ ({', '.join(files)})")
    return 0


def _final_results(
    vae, dataset: data_mod.Dataset, config: TrainConfig, history: History, cond=None
) -> dict:
    vae.eval()
    if cond is None:
        splits = (("train", evaluation_split(dataset, "train")), ("test", dataset.x_test))
    else:
        from pyro_vae.tasks import pairs

        splits = (("train", pairs(cond.task, dataset, "train")), ("test", cond.test))
    torch.manual_seed(config.seed)
    elbo = {
        split: mean_elbo(
            vae.model,
            vae.guide,
            data,
            num_particles=FINAL_ELBO_PARTICLES,
            batch_size=config.eval_batch_size,
        )
        for split, data in splits
    }
    kind = vae.config()["kind"]
    return {
        "model": kind,
        "task": None if cond is None else cond.task.name,
        # the ELBO bounds log P(X), or log P(Y|X) for the conditional models; with no
        # latent variable (the regressor) it is the exact log-likelihood
        "target": "X" if cond is None else "Y|X",
        "exact": kind == "regressor",
        "dataset": dataset.name,
        "split": {"train": len(dataset.x_train), "test": len(dataset.x_test)},
        "binarize": dataset.binarize,
        "dequantized": dataset.dequantized,
        "likelihood": vae.likelihood.config(),
        "epochs": history.epoch[-1] if history.epoch else 0,
        "seed": config.seed,
        "elbo_particles": FINAL_ELBO_PARTICLES,
        "train_elbo": elbo["train"],
        "test_elbo": elbo["test"],
        "unit": "nats per image",
        # an upper bound on bits/dim (the ELBO bounds log P from below); None where a
        # continuous density was fitted to data that were not dequantized
        "test_elbo_bits_per_dim": comparable_bits_per_dim(vae, dataset, elbo["test"]),
        "train_seconds": sum(history.seconds),
    }


def _bits_kind(r: dict) -> str:
    """Exact only for an exact log-likelihood of discrete data; a dequantized density
    scored on one noise draw bounds the discrete log-likelihood (Theis et al. 2016)."""
    if not r.get("exact"):
        return "an upper bound"
    return "an upper bound, from one dequantization" if r["dequantized"] else "exact"


def _results_table(r: dict) -> str:
    lik = ", ".join(f"{k}={v}" for k, v in r["likelihood"].items())
    model = r.get("model", "vae")
    if model == "vae":
        what, column = f"ELBO from {r['elbo_particles']} samples of z per image", "ELBO"
    elif r.get("exact"):
        what, column = "regressor on task " + r["task"], "log P(Y\\|X), exact"
    else:
        what = f"CVAE on task {r['task']}, ELBO from {r['elbo_particles']} samples of z per image"
        column = "ELBO of log P(Y\\|X)"
    return (
        f"\n{r['dataset']} ({r['split']['train']} train / {r['split']['test']} test images, "
        f"binarize={r['binarize']}, dequantized={r['dequantized']}), likelihood {lik}, "
        f"{r['epochs']} epochs, seed {r['seed']}; {what}, one run\n\n"
        f"| split | {column} (nats per image) |\n"
        "|---|---|\n"
        f"| train | {r['train_elbo']:.2f} |\n"
        f"| test | {r['test_elbo']:.2f} |\n"
        + (
            f"\nTest {'log-likelihood' if r.get('exact') else 'ELBO'} as bits per dimension "
            f"({_bits_kind(r)}): {bpd:.4f}\n\n"
            if (bpd := r["test_elbo_bits_per_dim"]) is not None
            else "\n"
        )
    )


def _write_figures(
    vae: VAE, dataset: data_mod.Dataset, history: History, out: Path, seed: int
) -> None:
    from pyro_vae import plots

    plots.save_figure(
        plots.history_figure(history, f"{dataset.name}: ELBO per image"), out / "loss.png"
    )
    if dataset.image_shape is None:
        return
    gen = torch.Generator(device=dataset.x_test.device).manual_seed(seed)
    samples = vae.sample(64, generator=gen)
    plots.save_figure(
        plots.grid_figure(samples, dataset.image_shape, "64 samples: z ~ N(0, I), mean of P(x|z)"),
        out / "samples.png",
    )
    x = dataset.x_test[spread_subset(len(dataset.x_test), 32).to(dataset.x_test.device)]
    plots.save_figure(
        plots.reconstruction_figure(
            x,
            vae.reconstruct(x),
            dataset.image_shape,
            "test images (odd rows) and reconstructions (even rows)",
        ),
        out / "reconstructions.png",
    )


def cmd_sample(args: argparse.Namespace) -> int:
    """``pyro-vae sample``: a grid of images decoded from prior samples."""
    from pyro_vae import plots

    if args.num_samples < 1:
        raise UsageError(f"-n must be at least 1, got {args.num_samples}")
    device = resolve_device(args.device)
    vae, _ = load_run(args.run, device)
    if not isinstance(vae, VAE):
        raise UsageError(
            f"{args.run} holds a conditional model ({vae.config()['kind']}), which draws Y "
            f"given a condition X; use `pyro-vae complete --run {args.run}`"
        )
    if vae.image_shape is None:
        raise UsageError(f"the model in {args.run} was not trained on images; nothing to draw")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    samples = vae.sample(args.num_samples, generator=gen)
    out = args.out or args.run / f"prior_samples_{args.num_samples}.png"
    plots.save_figure(
        plots.grid_figure(
            samples,
            vae.image_shape,
            f"{args.num_samples} samples from the prior (seed {args.seed})",
        ),
        out,
    )
    print(f"pyro-vae: wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
