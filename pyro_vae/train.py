"""Training by stochastic variational inference: :func:`fit`.

``fit`` optimizes any :class:`~pyro_vae.models.base.Model` (a
:class:`~pyro_vae.models.vae.VAE`, say) with one of Pyro's objectives, on data held as
tensors on the training device. Mini-batches are slices of a fresh permutation
each epoch; the loss is summed on the device and read back every 20 steps for
the progress bar and once per epoch, where non-finite values stop the run.
What a single step does is in :mod:`pyro_vae.engine`; the settings and the record of a
run are in :mod:`pyro_vae.train_config`.

``fit`` reads as four parts: :func:`check_fit_inputs` (nothing is trained on data or
settings that cannot work), ``_start`` (a fresh or a resumed run: weights, optimizer and
random streams), ``_train_epoch`` (the steps of one epoch) and ``_save`` (the
checkpoint, with every rank's random state).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae import checkpoint as ckpt_io
from pyro_vae import distributed
from pyro_vae.engine import Engine, make_engine
from pyro_vae.errors import RunWarning, TrainingDiverged, UsageError
from pyro_vae.evaluate import mean_elbo
from pyro_vae.io import remove_leftovers
from pyro_vae.memory import check_fits
from pyro_vae.models.base import Model
from pyro_vae.models.config import differences
from pyro_vae.objectives import make_objective
from pyro_vae.train_config import (
    BURDA_STAGES,
    LR_SCHEDULES,
    RESUMABLE,
    History,
    TrainConfig,
    resumable,
)

__all__ = [
    "BURDA_STAGES",
    "LR_SCHEDULES",
    "RESUMABLE",
    "History",
    "TrainConfig",
    "check_fit_inputs",
    "fit",
    "resumable",
]


def check_fit_inputs(
    model,
    train: torch.Tensor | Sequence[torch.Tensor],
    test: torch.Tensor | Sequence[torch.Tensor] | None,
    config: TrainConfig,
    batch_transform: Callable | None = None,
) -> None:
    """Everything :func:`fit` checks before its first step, callable on its own
    (the command line runs it before writing any file).

    :raises UsageError: naming the setting or data that cannot work and the fix.
    """
    if not isinstance(model, Model):
        raise UsageError(
            f"fit trains a pyro_vae.models.Model, got {type(model).__name__}; subclass Model "
            "(docs/guide.md, 'Adding a model'), or call pyro.infer.SVI on your functions"
        )
    config.check()
    # an objective that cannot sum the model's enumerated sites out is refused here
    make_objective(config.objective, 1, model.max_plate_nesting, bool(model.enumerated_sites))
    train = _as_tuple(train)
    n_train = train[0].shape[0]
    if n_train == 0:
        raise UsageError("the training split is empty")
    if config.batch_size > n_train:
        raise UsageError(
            f"{{batch_size}} {config.batch_size} is larger than the training split "
            f"({n_train} data points); use {{batch_size}} {n_train} or less",
            settings=("batch_size",),
        )
    for name, tensors in (
        ("training", train),
        ("test", _as_tuple(test) if test is not None else ()),
    ):
        for t in tensors:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise UsageError(
                    f"the {name} data hold NaN or infinite values; remove or impute them"
                )
    transforms = _transforms(batch_transform, len(train))
    if not any(transforms):
        model.check_data(*train, what="the training split")
    else:  # check what the model will see: one transformed copy of the data
        seen = _apply(transforms, train)
        model.check_data(*seen, what="the training split (as each batch is transformed)")
    if test is not None:
        model.check_data(*_as_tuple(test), what="the test split")
    weights = sum(p.numel() for p in model.parameters())
    check_fits(
        3 * weights,
        f"training the {weights:,} parameters (their gradients and Adam's two moments)",
        "use a smaller model",
    )
    width = model.data_dims[-1] * model.likelihood.params_per_dim
    check_fits(
        config.num_particles * config.batch_size * width,
        f"a step's tensor of likelihood parameters ({config.num_particles} particles x "
        f"{config.batch_size} points x {width})",
        "use fewer {num_particles} or a smaller {batch_size}",
        settings=("num_particles", "batch_size"),
    )


def fit(
    model,
    train: torch.Tensor | Sequence[torch.Tensor],
    test: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    config: TrainConfig | None = None,
    batch_transform: Callable | Sequence[Callable | None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch: Callable[[History], None] | None = None,
) -> History:
    """Train ``model`` by SVI and return its :class:`History`.

    :param model: a :class:`~pyro_vae.models.base.Model` (its ``model`` and ``guide``
        take the data tensors as positional arguments).
    :param train: training tensor, or tuple of tensors sharing dimension 0, on
        the training device.
    :param test: held-out data in the same form, scored each epoch; optional.
    :param TrainConfig config: optimization settings.
    :param batch_transform: applied to the first tensor of every training
        mini-batch (e.g. :func:`pyro_vae.data.binarize_batch`); or a sequence with
        one callable (or ``None``) per data tensor, e.g. ``(binarize_batch,
        binarize_batch)`` to binarize both X and Y of a conditional model afresh.
    :param checkpoint: file written atomically after every epoch. It holds
        ``config = {"model": model.config(), "train": ..., **run_config}``, the
        weights, the optimizer state, the history and the RNG states.
    :param bool resume: continue from ``checkpoint``; the settings other than
        the :func:`resumable` fields of :class:`TrainConfig`, and the model's
        ``config()`` (its likelihood's included), must equal the checkpoint's.
    :param dict run_config: more plain data stored in the checkpoint's ``config``.
    :param bool progress: show a progress bar with the running objective.
    :param on_epoch: called with the :class:`History` after each epoch (and checkpoint).

    ``config.seed`` seeds the training randomness (batches, samples of z); seed
    before building ``model`` as well if its initial weights should be reproducible.

    Inside a process group of several ranks (:mod:`pyro_vae.distributed`) every rank
    calls ``fit`` with the same arguments and trains data-parallel: the data order
    comes from a generator seeded with ``config.seed`` (the same on every rank), each
    rank takes its contiguous share of every global batch of ``config.batch_size``
    points, draws its samples from its own stream, and DDP averages the gradients, so a
    step follows the gradient of the whole batch as in one process. The test ELBO is
    computed on shares too. Only rank 0 shows progress and writes the checkpoint, which
    holds every rank's random state: a run resumed with as many processes continues
    draw for draw, and one resumed with another number continues its weights,
    optimizer state and history with fresh random streams (a :class:`RunWarning` says
    so).

    :raises UsageError: bad settings or data, before any training step.
    :raises TrainingDiverged: the objective or a parameter became non-finite;
        the checkpoint of the last good epoch is kept.
    """
    config = config or TrainConfig()
    check_fit_inputs(model, train, test, config, batch_transform)
    train = _as_tuple(train)
    run = _start(model, train, config, checkpoint, resume, run_config)
    transforms = _transforms(batch_transform, len(train))
    steps_per_epoch = run.steps_per_epoch
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=run.start_epoch * steps_per_epoch,
        desc="train",
        unit="step",
        disable=not (progress and distributed.is_main()),
        dynamic_ncols=True,
    )
    try:
        with pyro.validation_enabled(config.validate):
            for epoch in range(run.start_epoch, config.epochs):
                train_objective, seconds = _train_epoch(
                    model, run, train, transforms, config, epoch, bar, checkpoint, progress
                )
                model.eval()
                test_elbo = math.nan
                if test is not None:
                    test_elbo = mean_elbo(
                        model.model,
                        model.guide,
                        _as_tuple(test),
                        batch_size=config.eval_batch_size,
                        max_plate_nesting=model.max_plate_nesting,
                        enumerate=bool(model.enumerated_sites),
                    )
                run.history.append(
                    epoch=epoch + 1,
                    train_objective=train_objective,
                    test_elbo=test_elbo,
                    kl_weight=config.kl_weight((epoch + 1) * steps_per_epoch - 1, steps_per_epoch),
                    seconds=seconds,
                )
                bar.set_postfix(
                    epoch=epoch + 1,
                    objective=f"{train_objective:.2f}",
                    test_elbo=f"{test_elbo:.2f}",
                )
                if checkpoint is not None:
                    _save(checkpoint, model, run, epoch)
                if on_epoch is not None:  # e.g. pyro_vae.tensorboard.TensorBoard.epoch
                    on_epoch(run.history)
    finally:
        bar.close()
    return run.history


@dataclass
class _Run:
    """What a training run carries from epoch to epoch."""

    engine: Engine
    history: History
    start_epoch: int
    steps_per_epoch: int
    #: the data order shared by several ranks (``None`` in one process)
    order: torch.Generator | None
    #: ``config`` of the checkpoint: the model's, the run's and the training settings
    stored_config: dict[str, Any]


def _start(model, train, config: TrainConfig, checkpoint, resume: bool, run_config) -> _Run:
    """A fresh run (seeded from ``config.seed``) or one resumed from ``checkpoint``: its
    engine, history and random streams."""
    stored_config = {"model": model.config(), **(run_config or {}), "train": asdict(config)}
    ranks, rank = distributed.world_size(), distributed.rank()
    if ranks > 1:
        distributed.check_batch(config.batch_size)
    # several ranks share one data order, from a generator of its own
    order = torch.Generator().manual_seed(config.seed) if ranks > 1 else None
    history, start_epoch, state = History(), 0, None
    if checkpoint is not None and distributed.is_main():  # writes killed mid-way
        remove_leftovers(checkpoint)
    if resume:
        state = _load_for_resume(checkpoint, model, config)
        history = History.from_dict(state["history"], f"{checkpoint}: history")
        start_epoch = state["epoch"]
    else:
        pyro.set_rng_seed(_rank_seed(config.seed, "train", rank) if ranks > 1 else config.seed)
    engine = make_engine(
        model,
        engine=config.engine,
        objective=config.objective,
        num_particles=config.num_particles,
        lr=config.lr,
        optimizer_state=state["optimizer_state"] if state else None,
        example_batch=train,
    )
    if state is not None:  # after building the engine: its set-up may draw random numbers
        _restore_streams(state, config, order)
    steps_per_epoch = math.ceil(train[0].shape[0] / config.batch_size)
    return _Run(engine, history, start_epoch, steps_per_epoch, order, stored_config)


def _train_epoch(
    model, run: _Run, train, transforms, config: TrainConfig, epoch: int, bar, checkpoint, progress
) -> tuple[float, float]:
    """One pass over the training split: ``(mean training objective, seconds)``.

    :raises TrainingDiverged: the objective or a parameter became non-finite.
    """
    ranks, rank = distributed.world_size(), distributed.rank()
    device, n_train = train[0].device, train[0].shape[0]
    params = list(model.parameters())
    run.engine.set_lr(config.lr_at(epoch))
    model.train()
    t0 = time.perf_counter()
    total = torch.zeros((), device=device)
    seen = 0  # data points this rank has scored in the epoch
    if run.order is None:
        perm = torch.randperm(n_train, device=device)
    else:
        perm = torch.randperm(n_train, generator=run.order).to(device)
    show = progress and distributed.is_main()
    for i in range(run.steps_per_epoch):
        idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
        if ranks > 1:  # this rank's share of the global batch
            idx = idx.tensor_split(ranks)[rank]
        seen += len(idx)
        batch = _apply(transforms, tuple(t[idx] for t in train))
        weight = config.kl_weight(epoch * run.steps_per_epoch + i, run.steps_per_epoch)
        try:
            total += run.engine.step(batch, weight)
        except ValueError as err:  # raised by distribution checks (validate)
            if _all_finite(params):
                raise
            raise _diverged(epoch, checkpoint, "a parameter became non-finite") from err
        bar.update(1)
        if show and (i + 1) % 20 == 0:
            running = -total.item() / max(seen, 1)  # rank 0's share
            bar.set_postfix(epoch=epoch + 1, objective=f"{running:.2f}")
    seconds = time.perf_counter() - t0
    train_objective = -distributed.all_sum(total).item() / n_train
    if not math.isfinite(train_objective) or not _all_finite(params):
        raise _diverged(epoch, checkpoint, f"the training objective was {train_objective}")
    return train_objective, seconds


def _save(checkpoint, model, run: _Run, epoch: int) -> None:
    """Write the checkpoint after ``epoch`` (rank 0), with every rank's random state."""
    weights = model.state_dict()
    bad = ckpt_io.nonfinite(weights)  # a buffer the parameter check does not see
    if bad:  # on every rank: the ranks hold the same weights
        raise _diverged(epoch, checkpoint, f"the model's {bad[0]} became non-finite")
    streams = distributed.gather_to_main(ckpt_io.rng_state())
    if not distributed.is_main():
        return
    saved = {
        "config": run.stored_config,
        "model_state": weights,
        "optimizer_state": run.engine.optimizer_state(),
        "epoch": epoch + 1,
        "history": run.history.to_dict(),
        "rng": streams[0],
    }
    ranks = distributed.world_size()
    if ranks > 1:
        saved["distributed"] = {"world_size": ranks, "rng": streams, "order": run.order.get_state()}
    ckpt_io.save(checkpoint, saved)


def _rank_seed(seed: int, purpose: str, index: int) -> int:
    """A seed for ``pyro.set_rng_seed`` (which seeds numpy too: below 2**32)."""
    return distributed.stream_seed(seed, purpose, index) % 2**32


def _restore_streams(state: dict[str, Any], config: TrainConfig, order) -> None:
    """Continue the random streams of a checkpoint, or restart them where the number of
    processes changed (with a :class:`RunWarning` saying what that changes)."""
    ranks, rank = distributed.world_size(), distributed.rank()
    saved = state.get("distributed")
    saved_ranks = saved["world_size"] if saved else 1
    if saved is not None and order is not None:
        order.set_state(saved["order"])  # the data order does not depend on the ranks
    if saved_ranks == ranks:
        ckpt_io.set_rng_state(saved["rng"][rank] if saved else state["rng"])
        return
    epoch = state["epoch"]
    if distributed.is_main():
        kept = "and data order " if saved is not None and order is not None else ""
        warnings.warn(
            f"resuming a run trained with {saved_ranks} process(es) on {ranks}: weights, "
            f"optimizer state {kept}and history continue from epoch {epoch}, but the "
            "random streams (samples of z, binarization"
            f"{'' if kept else ', data order'}) restart from seeds derived from the "
            f"run's seed and the epoch, so the run will not repeat an uninterrupted "
            f"{saved_ranks}-process run draw for draw",
            RunWarning,
            stacklevel=3,
        )
    pyro.set_rng_seed(_rank_seed(config.seed, f"resume-{epoch}", rank))
    if saved is None and order is not None:
        order.manual_seed(distributed.stream_seed(config.seed, f"order-{epoch}", 0))


def _load_for_resume(checkpoint, model, config: TrainConfig) -> dict[str, Any]:
    if checkpoint is None:
        raise UsageError("{resume} needs a {checkpoint} path", settings=("resume", "checkpoint"))
    state = ckpt_io.load(checkpoint)  # to the CPU: RNG states must stay there
    stored = asdict(TrainConfig.from_dict(state["config"]["train"], f"{checkpoint}: config.train"))
    changed = [
        f"{k}={v!r} (checkpoint has {stored[k]!r})"
        for k, v in asdict(config).items()
        if k not in resumable(TrainConfig) and k in stored and stored[k] != v
    ]  # and the model's settings: its sizes, its likelihood's (a temperature, say)
    mine, theirs = model.config(), state["config"].get("model", {})
    changed += [f"{k}={a!r} (checkpoint has {b!r})" for k, a, b in differences(mine, theirs)]
    if changed:
        raise UsageError(
            f"cannot resume {checkpoint} with different settings: {', '.join(changed)}. "
            "Resume with the checkpoint's settings, or start a new run."
        )
    ckpt_io.load_model_state(model, state["model_state"], str(checkpoint))
    return state


def _transforms(batch_transform, num_tensors: int) -> tuple:
    """One transform (or ``None``) per data tensor."""
    if batch_transform is None or callable(batch_transform):
        return (batch_transform,) + (None,) * (num_tensors - 1)
    transforms = tuple(batch_transform)
    if len(transforms) != num_tensors or not all(t is None or callable(t) for t in transforms):
        raise UsageError(
            f"batch_transform: expected a callable or {num_tensors} callables (or None), "
            f"one per data tensor; got {batch_transform!r}"
        )
    return transforms


def _apply(transforms: tuple, batch: tuple) -> tuple:
    return tuple(t if f is None else f(t) for f, t in zip(transforms, batch, strict=True))


def _as_tuple(data):
    return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def _all_finite(params) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def _diverged(epoch: int, checkpoint, what: str) -> TrainingDiverged:
    kept = (
        f"the checkpoint of the last good epoch ({epoch}) is kept at {checkpoint}"
        if checkpoint is not None and epoch > 0
        else "no checkpoint was written"
    )
    return diverged(epoch, what, kept)


def diverged(epoch: int, what: str, kept: str) -> TrainingDiverged:
    """The error of a run that diverged in ``epoch`` (0-based) because of ``what``,
    saying what was ``kept``; it carries ``epoch`` and ``what`` as attributes, for a
    caller that keeps something else (``pyro-vae train --overwrite`` keeps the old run)."""
    error = TrainingDiverged(
        f"training diverged in epoch {epoch + 1}: {what}; {kept}. "
        "Try a smaller {lr}, a larger {sigma}, or {validate} to find the first bad value.",
        settings=("lr", "sigma", "validate"),
    )
    error.epoch, error.what = epoch, what
    return error
