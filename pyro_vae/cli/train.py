"""``pyro-vae train``: train a model and write its run folder.

The options of the data (``--dataset`` ...) and of training (``--epochs`` ...) are the
fields of :class:`~pyro_vae.run.DataConfig` and :class:`~pyro_vae.train.TrainConfig`;
each model class adds its own (:attr:`~pyro_vae.models.base.Model.options`), and an
option the chosen ``--model`` does not take is refused.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import pyro

from pyro_vae import checkpoint as ckpt_io
from pyro_vae import data as data_mod
from pyro_vae import distributed, plots, plugins, reports, staging, tensorboard
from pyro_vae.cli.options import add_device, add_seed, writing
from pyro_vae.engine import ENGINES
from pyro_vae.errors import TrainingDiverged, UsageError
from pyro_vae.io import write_json, write_text
from pyro_vae.limits import (
    MAX_BATCH_SIZE,
    MAX_BETA,
    MAX_EPOCHS,
    MAX_KL_WARMUP,
    MAX_LR,
    MAX_PARTICLES,
)
from pyro_vae.models import DEFAULT_KIND, MODELS, model_class
from pyro_vae.models.base import Model, Option
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.parsing import at_least, between, path
from pyro_vae.run import DataConfig, RunConfig, RunFolder, resumable
from pyro_vae.train import LR_SCHEDULES, TrainConfig, check_fit_inputs, diverged, fit

_TRAIN = TrainConfig()
#: the data and training options: (flag, argparse keywords); their dest is a field name
RUN_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--dataset", {"help": f"one of {', '.join(data_mod.DATASETS)} (default mnist5k)"}),
    ("--data-dir", {"type": path, "help": "folder for torchvision data sets (default ./data)"}),
    (
        "--binarize",
        {
            "choices": data_mod.BINARIZE_MODES,
            "help": "default: dynamic for a likelihood of binary data (bernoulli), else none",
        },
    ),
    (
        "--dequantize",
        {
            "action": "store_const",
            "const": True,
            "help": "train and score continuous likelihoods on uniformly dequantized pixels "
            "(k + u) / levels, so that log-likelihoods convert to comparable bits per dimension",
        },
    ),
    (
        "--epochs",
        {
            "type": at_least(1, MAX_EPOCHS),
            "help": f"passes over the data (default {_TRAIN.epochs})",
        },
    ),
    (
        "--batch-size",
        {"type": at_least(1, MAX_BATCH_SIZE), "help": f"(default {_TRAIN.batch_size})"},
    ),
    (
        "--lr",
        {
            "type": between(0, MAX_LR, open_low=True),
            "help": f"Adam step size, in (0, {MAX_LR:g}] (default {_TRAIN.lr})",
        },
    ),
    (
        "--lr-schedule",
        {
            "choices": LR_SCHEDULES,
            "help": "constant, or burda: --lr x 10^(-i/7) for 3^i epochs, i = 0..7 (3,280 "
            "epochs; Burda et al. 2016) (default constant)",
        },
    ),
    (
        "--objective",
        {
            "choices": OBJECTIVES,
            "help": "elbo: Trace_ELBO; mean-field: TraceMeanField_ELBO (the analytic KL "
            "for the standard prior; a learned --prior has no closed form, and its KL term "
            "is then the Monte Carlo estimate of elbo); "
            "iwae: RenyiELBO(alpha=0) (default elbo)",
        },
    ),
    (
        "--num-particles",
        {
            "type": at_least(1, MAX_PARTICLES),
            "help": "samples of z per data point per step (default 1)",
        },
    ),
    (
        "--beta",
        {
            "type": between(0, MAX_BETA, open_low=True),
            "help": f"KL weight, in (0, {MAX_BETA:g}] (default 1)",
        },
    ),
    (
        "--kl-warmup",
        {
            "type": between(0, MAX_KL_WARMUP),
            "help": "epochs of linear KL warm-up to beta (default 0)",
        },
    ),
    (
        "--engine",
        {
            "choices": ENGINES,
            "help": "fast: differentiable_loss + torch Adam; svi: pyro.infer.SVI (default fast)",
        },
    ),
    (
        "--validate",
        {
            "action": "store_const",
            "const": True,
            "help": "check distribution arguments every step (slower)",
        },
    ),
)
#: training settings that act on latent variables, with the values that leave them alone
LATENT_SETTINGS = {"objective": "elbo", "num_particles": 1, "beta": 1.0, "kl_warmup": 0.0}
DATA_FIELDS = tuple(f.name for f in fields(DataConfig))
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


def model_options() -> dict[str, tuple[Option, list[str]]]:
    """Every model option of the registry: ``{dest: (option, kinds that take it)}``;
    the option is the first model's declaration (:func:`~pyro_vae.models.register`
    ensures that all declarations of a flag parse alike)."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for kind, cls in MODELS.items():
        for option in cls.options:
            found.setdefault(option.dest, (option, []))[1].append(kind)
    return found


def _plain(value: Any) -> Any:
    """``value`` as ``config.json`` holds it (tuples as lists), for comparisons."""
    return list(value) if isinstance(value, tuple) else value


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _option_help(dest: str, kinds: list[str]) -> str:
    """Help of a model option: its text, the models that take it, and the default
    (per model where the models differ)."""
    declared = {k: next(o for o in MODELS[k].options if o.dest == dest) for k in kinds}
    text = next(iter(declared.values())).help
    defaults = {k: _shown(o.default) for k, o in declared.items() if o.default is not None}
    if len(set(defaults.values())) == 1 and len(defaults) == len(kinds):
        text += f" (default {next(iter(defaults.values()))})"
    elif defaults:  # the most common default, then the models that differ from it
        values = list(defaults.values())
        common = max(values, key=values.count)
        if values.count(common) == 1:
            text += " (default " + ", ".join(f"{v} for {k}" for k, v in defaults.items())
        else:
            others = [f"{v} for {k}" for k, v in defaults.items() if v != common]
            text += f" (default {common}; " + ", ".join(others)
        text += ")"
    return f"{text} [{', '.join(kinds)}]"


def add_parser(sub) -> None:
    """Register ``train`` on an ``argparse`` subparsers object."""
    t = sub.add_parser("train", help="train a model and write its run folder")
    t.add_argument(
        "--model",
        choices=tuple(MODELS),
        help="; ".join(f"{k}: {c.summary}" for k, c in MODELS.items())
        + f" (default {DEFAULT_KIND})",
    )
    group = t.add_argument_group("model options (each model takes some of them)")
    for option, kinds in model_options().values():
        group.add_argument(
            option.flag,
            type=option.type,
            choices=option.choices,
            help=_option_help(option.dest, kinds),
        )
    for flag, keywords in RUN_OPTIONS:
        t.add_argument(flag, **keywords)
    add_seed(t, default=None)
    add_device(t)
    t.add_argument(
        "--out",
        type=path,
        help="run folder (default runs/DATASET-MODEL-CHOICES-TIME, CHOICES the "
        "model's task and any other choice that differs from its default)",
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out once the new one has finished (until then, and if "
        "it fails, the old run stays whole)",
    )
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument(
        "--tensorboard", nargs="?", const=True, type=path, metavar="DIR", help=tensorboard.HELP
    )
    t.set_defaults(func=cmd_train, distributed=True)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_model_options(cls: type[Model], given: dict[str, Any]) -> dict[str, Any]:
    """The values of ``cls``'s options (defaults filled in).

    :raises UsageError: for an option ``cls`` does not take, or a required one missing.
    """
    own = {o.dest for o in cls.options}
    for dest, (option, kinds) in model_options().items():
        if dest in given and dest not in own:
            raise UsageError(
                f"{option.flag} applies to --model {' or '.join(kinds)}, not to --model "
                f"{cls.kind}; drop {option.flag} or choose another --model"
            )
    if not cls.supports("latent"):
        for key, neutral in LATENT_SETTINGS.items():
            if key in given and given[key] != neutral:
                raise UsageError(
                    f"{_flag(key)} acts on latent variables, and --model {cls.kind} has no "
                    f"latent variable; drop {_flag(key)}"
                )
    for option in cls.options:
        if option.required and option.dest not in given:
            choices = f", one of {', '.join(option.choices)}" if option.choices else ""
            raise UsageError(f"--model {cls.kind} needs {option.flag}{choices}")
    return {o.dest: given.get(o.dest, o.default) for o in cls.options}


def _new_run(given: dict[str, Any]) -> tuple[RunConfig, Model, data_mod.Dataset]:
    cls = model_class(given.get("model", DEFAULT_KIND))
    options = check_model_options(cls, given)
    data = DataConfig(**{k: given[k] for k in DATA_FIELDS if k in given})
    data.data_dir = str(Path(data.data_dir).resolve())  # runs are evaluated from anywhere
    train = TrainConfig(**{k: given[k] for k in TRAIN_FIELDS if k in given})
    train.check()
    dataset = data.load()
    pyro.set_rng_seed(train.seed)  # the initial weights belong to the seeded run
    model = cls.from_options(options, dataset)
    likelihood = model.likelihood
    if data.dequantize and likelihood.discrete:
        raise UsageError(
            f"--dequantize turns grey levels into continuous values for a density, but the "
            f"{likelihood.name} likelihood models discrete pixels; choose a continuous "
            "--likelihood (gaussian, laplace, beta, continuous-bernoulli) or drop --dequantize"
        )
    if "binarize" not in given and likelihood.binary:  # grey levels would be refused
        data.binarize = "dynamic"
        dataset = data_mod.binarize_dataset(dataset, data.binarize)
    return RunConfig(data, model.config(), train, plugins=plugins.provenance(model)), model, dataset


def _resumed_run(folder: RunFolder, given: dict[str, Any]):
    stored = folder.read_config()
    cls = model_class(stored.model["kind"], str(folder.config))
    check_model_options(cls, {**{o.dest: None for o in cls.options if o.required}, **given})
    was = {
        "model": cls.kind,
        **{o.dest: o.value_in(stored.model) for o in cls.options},
        **asdict(stored.data),
        **asdict(stored.train),
    }
    may_change = resumable(DataConfig) | resumable(TrainConfig)
    changed = [
        f"{_flag(k)} {_shown(v)} (run has {'none' if was[k] is None else _shown(was[k])})"
        for k, v in given.items()
        if k in was and k not in may_change and _plain(v) != _plain(was[k])
    ]
    if changed:
        raise UsageError(
            f"cannot resume {folder.folder} with different settings: {', '.join(changed)}. "
            "Drop these options to resume, or train a new run with another --out."
        )
    done = ckpt_io.load(folder.checkpoint)["epoch"]
    if given.get("epochs", done) < done:
        raise UsageError(
            f"--epochs {given['epochs']}: the run in {folder.folder} has already trained "
            f"{done} epochs; pass --epochs {done + 1} or more to train it further"
        )
    data = replace(stored.data, **{k: given[k] for k in resumable(DataConfig) if k in given})
    train = replace(stored.train, **{k: given[k] for k in resumable(TrainConfig) if k in given})
    train.check()
    model = cls.from_config(stored.model)
    return RunConfig(data, stored.model, train, plugins=stored.plugins), model, data.load()


def default_run_name(given: dict[str, Any]) -> str:
    """``DATASET-MODEL-CHOICES-TIME``: the folder name of a run trained without
    ``--out``; CHOICES are the values of the model's options that have choices (its
    task, likelihood, guide ...) where they are required or differ from the default."""
    cls = model_class(given.get("model", DEFAULT_KIND))
    chosen = [
        given.get(o.dest, o.default)
        for o in cls.options
        if o.choices and (o.required or given.get(o.dest, o.default) != o.default)
    ]
    parts = [
        given.get("dataset", DataConfig.dataset),
        cls.kind,
        *(str(v) for v in chosen if v is not None),
        time.strftime("%Y%m%d-%H%M%S"),
    ]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def _out_folder(args: argparse.Namespace, given: dict[str, Any]) -> RunFolder:
    """The run folder of ``--out``, checked as a path; what it holds is checked under
    its lock (:func:`_check_state`)."""
    if args.resume and args.overwrite:
        raise UsageError(
            "--resume continues the run in --out and --overwrite replaces it; choose one"
        )
    if args.out is None:
        if args.resume:
            raise UsageError("--resume needs --out pointing at a run folder")
        return RunFolder(Path("runs") / default_run_name(given))
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder for the run")
    return RunFolder(args.out)


def _check_state(args: argparse.Namespace, folder: RunFolder) -> None:
    """Refuse to resume a folder without a run, or to train over a run unless asked;
    called while holding the folder's lock, so no other writer changes the answer."""
    if args.resume and not folder.exists():
        raise UsageError(f"--resume: {folder.folder} holds no run (no checkpoint.pt) to continue")
    if not args.resume and not args.overwrite and folder.exists():
        raise UsageError(
            f"{folder.folder} already holds a run; pass --resume to continue it, --overwrite "
            "to replace it, or choose another --out"
        )


def cmd_train(args: argparse.Namespace) -> int:
    """``pyro-vae train``: see ``pyro-vae train --help``."""
    dests = {"model", *model_options(), *DATA_FIELDS, *TRAIN_FIELDS}
    given = {k: v for k, v in vars(args).items() if k in dests and v is not None}
    if "data_dir" in given:  # runs are evaluated and resumed from anywhere
        given["data_dir"] = str(Path(given["data_dir"]).resolve())
    if "batch_size" in given:  # before joining the group: no rank waits for a refusal
        distributed.check_batch(given["batch_size"])
    if args.tensorboard is not None:
        tensorboard.summary_writer()  # refused before anything is written
    device = distributed.setup(args.device)
    folder = _out_folder(args, given)
    folder = RunFolder(distributed.broadcast(folder.folder))  # one default name for all ranks
    with writing(folder.folder, "pyro-vae train", check=lambda: _check_state(args, folder)):
        if not args.overwrite:
            return _train(args, given, folder, folder, device)
        # the new run trains beside the old one and replaces it once it has finished
        staged = RunFolder(folder.folder / staging.STAGE)
        try:
            if distributed.is_main():
                staging.stage(folder.folder)
            return _train(args, given, staged, folder, device)
        except TrainingDiverged as err:
            kept = f"the new run is discarded, and {folder.folder} keeps the earlier run"
            raise diverged(err.epoch, err.what, kept) from None
        finally:
            if distributed.is_main():
                staging.discard(folder.folder)  # after promotion, nothing is left


def _train(
    args: argparse.Namespace, given: dict[str, Any], folder: RunFolder, final: RunFolder, device
) -> int:
    """Train into ``folder``; with ``--overwrite`` that is a staging folder whose run
    replaces the one in ``final`` at the end."""
    with distributed.node_leader_first():  # one download per node, then the others read
        if args.resume:
            config, model, dataset = _resumed_run(folder, given)
        else:
            config, model, dataset = _new_run(given)
    dataset = dataset.to(device)
    model = model.to(device)
    data = model.training_data(dataset)
    # every check fit() makes, before any file is written
    check_fit_inputs(model, data.train, data.test, config.train, data.transforms)
    distributed.check_batch(config.train.batch_size)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes to it
    main = distributed.is_main()  # only rank 0 writes and prints
    if main:
        folder.write_config(config)  # a resumed run records its new epoch count
        ranks = distributed.world_size()
        on = f", {ranks} processes" if ranks > 1 else ""
        print(
            f"pyro-vae: training {model.describe()} on {dataset.name} "
            f"({len(dataset.x_train)} train, {len(dataset.x_test)} test, "
            f"binarize={dataset.binarize}{on}) -> {final.folder}"
        )
    board = tensorboard.for_run(args.tensorboard, final.folder, model, dataset, config.train)
    history = fit(
        model,
        data.train,
        data.test,
        config=config.train,
        batch_transform=data.transforms,
        checkpoint=folder.checkpoint,
        resume=args.resume,
        run_config=config.to_dict(),
        progress=not args.no_progress,
        on_epoch=board.epoch if board else None,
    )
    if board:
        board.close()
    scored = {"train": model.evaluation_data(dataset, "train"), "test": data.test}
    results = reports.training_results(model, dataset, config.train, history, scored)
    if not main:
        return 0
    write_json(folder.history, history.to_dict())
    write_json(folder.results_json, results)
    table = reports.training_table(results)
    write_text(folder.results_md, table)
    figures = plots.training_figures(model, dataset, history, seed=config.train.seed)
    for name, figure in figures.items():
        plots.save_figure(figure, folder.figure(name))
    if folder is not final:
        staging.promote(final.folder, RunFolder.STALE)
    print(table, end="")
    written = ("config.json", "checkpoint.pt", "history.json", "results.json", "results.md")
    print(f"pyro-vae: wrote {final.folder}/ ({', '.join([*written, *figures])})")
    return 0
