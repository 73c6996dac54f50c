"""Training by stochastic variational inference: :func:`fit`.

``fit`` optimizes any :class:`~pyro_vae.models.base.Model` (a
:class:`~pyro_vae.models.vae.VAE`, say) with one of Pyro's objectives, on data held as
tensors on the training device. Mini-batches are slices of a fresh permutation
each epoch; the loss is summed on the device and read back every 20 steps for
the progress bar and once per epoch, where non-finite values stop the run.
What a single step does is in :mod:`pyro_vae.engine`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae import checkpoint as ckpt_io
from pyro_vae import distributed
from pyro_vae.engine import ENGINES, OBJECTIVES, make_engine
from pyro_vae.errors import RunWarning, TrainingDiverged, UsageError
from pyro_vae.evaluate import mean_elbo
from pyro_vae.models.base import Model

#: marks a config field that may change when a run is resumed; the others shape the
#: optimizer state or the schedule, so a checkpoint is only continued with the same values
RESUMABLE = {"resumable": True}


def resumable(config_class: type) -> frozenset[str]:
    """Fields of a config dataclass that may change when a run is resumed (marked with
    ``metadata=RESUMABLE``); the others define the run."""
    return frozenset(f.name for f in fields(config_class) if f.metadata.get("resumable"))


#: learning-rate schedules of :class:`TrainConfig`
LR_SCHEDULES = ("constant", "burda")
#: stages of Burda et al.'s schedule: 3^i epochs each, i = 0..7
BURDA_STAGES = 8


@dataclass
class TrainConfig:
    """Optimization settings. Plain data: stored in checkpoints and ``config.json``."""

    epochs: int = field(default=50, metadata=RESUMABLE)  # passes over the training split
    batch_size: int = 128  # data points per gradient step
    lr: float = 1e-3  # Adam step size (at the start, with a schedule)
    #: "constant", or "burda": lr * 10^(-i/7) for 3^i epochs, i = 0..7 (3,280 epochs),
    #: the schedule of Burda et al. (2016), section 5
    lr_schedule: str = "constant"
    # "elbo": Trace_ELBO (Monte Carlo KL); "mean-field": TraceMeanField_ELBO
    # (analytic KL, Doersch eq. 7); "iwae": RenyiELBO(alpha=0), the IWAE bound
    objective: str = "elbo"
    num_particles: int = 1  # samples of z per data point per step (k of IWAE-k)
    beta: float = 1.0  # KL weight after warm-up; 1 is the true ELBO
    kl_warmup: float = 0.0  # epochs over which the KL weight rises linearly to beta
    engine: str = "fast"  # "fast" or "svi"; see pyro_vae.engine
    seed: int = 0  # seeds torch, numpy and random at the start of a fresh run
    #: distribution argument checks in the hot loop (slow)
    validate: bool = field(default=False, metadata=RESUMABLE)
    #: data points per batch when scoring the test split
    eval_batch_size: int = field(default=1000, metadata=RESUMABLE)

    def check(self) -> None:
        """:raises UsageError: for any out-of-range or unknown setting."""
        if self.objective not in OBJECTIVES:
            raise UsageError(
                f"unknown objective {self.objective!r}; valid names: {', '.join(OBJECTIVES)}"
            )
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; valid names: {', '.join(ENGINES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(
                f"unknown lr_schedule {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}"
            )
        for name in ("epochs", "batch_size", "num_particles", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"seed must be in [0, 2**32), got {self.seed}")
        for name in ("lr", "beta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.kl_warmup) and self.kl_warmup >= 0):
            raise UsageError(
                f"kl_warmup must be a finite number of epochs >= 0, got {self.kl_warmup}"
            )
        if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup > 0):
            raise UsageError(
                "beta and KL warm-up weight the KL term of an ELBO; the IWAE bound has no "
                "separate KL term. Use --objective elbo or mean-field with them, or drop them."
            )

    def lr_at(self, epoch: int) -> float:
        """Adam's step size in epoch ``epoch`` (0-based).

        ``"burda"``: stage i lasts 3^i epochs at ``lr * 10^(-i/7)``, for i = 0..7; epochs
        after the 3,280 of the schedule stay at its last step size.
        """
        if self.lr_schedule == "constant":
            return self.lr
        stage, end = 0, 1
        while epoch >= end and stage < BURDA_STAGES - 1:
            stage += 1
            end += 3**stage
        return self.lr * 10 ** (-stage / 7)

    def kl_weight(self, step: int, steps_per_epoch: int) -> float:
        """KL weight at global step ``step`` (0-based): rises linearly to ``beta``.

        It starts at ``beta / warm-up steps``, above zero, because ``poutine.scale``
        rejects a zero weight.
        """
        warmup_steps = self.kl_warmup * steps_per_epoch
        if warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, (step + 1) / warmup_steps)


@dataclass
class History:
    """Per-epoch record of a run, in nats per data point."""

    epoch: list[int] = field(default_factory=list)
    #: mean training objective over the epoch's steps (the ELBO estimate when beta = 1)
    train_objective: list[float] = field(default_factory=list)
    #: ELBO of the test split after the epoch (beta = 1), or NaN without test data
    test_elbo: list[float] = field(default_factory=list)
    #: KL weight at the last step of the epoch
    kl_weight: list[float] = field(default_factory=list)
    #: wall-clock seconds spent in the epoch's training steps
    seconds: list[float] = field(default_factory=list)

    def append(self, **row: float) -> None:
        """Add one epoch's values (keyword per field)."""
        for key, value in row.items():
            getattr(self, key).append(value)

    def to_dict(self) -> dict[str, list]:
        """Plain-data copy for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: list(v) for k, v in d.items()})


def check_fit_inputs(
    vae,
    train: torch.Tensor | Sequence[torch.Tensor],
    test: torch.Tensor | Sequence[torch.Tensor] | None,
    config: TrainConfig,
    batch_transform: Callable | None = None,
) -> None:
    """Everything :func:`fit` checks before its first step, callable on its own
    (the command line runs it before writing any file).

    :raises UsageError: naming the setting or data that cannot work and the fix.
    """
    if not isinstance(vae, Model):
        raise UsageError(
            f"fit trains a pyro_vae.models.Model, got {type(vae).__name__}; subclass Model "
            "(docs/guide.md, 'Adding a model'), or call pyro.infer.SVI on your functions"
        )
    config.check()
    train = _as_tuple(train)
    n_train = train[0].shape[0]
    if n_train == 0:
        raise UsageError("the training split is empty")
    if config.batch_size > n_train:
        raise UsageError(
            f"batch size {config.batch_size} is larger than the training split "
            f"({n_train} data points); use --batch-size {n_train} or less"
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
        vae.check_data(*train, what="the training split")
    else:  # check what the model will see: one transformed copy of the data
        seen = _apply(transforms, train)
        vae.check_data(*seen, what="the training split (as each batch is transformed)")
    if test is not None:
        vae.check_data(*_as_tuple(test), what="the test split")


def fit(
    vae,
    train: torch.Tensor | Sequence[torch.Tensor],
    test: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    config: TrainConfig | None = None,
    batch_transform: Callable | Sequence[Callable | None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> History:
    """Train ``vae`` by SVI and return its :class:`History`.

    :param vae: a :class:`~pyro_vae.models.base.Model` (its ``model`` and ``guide``
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
        ``config = {"model": vae.config(), "train": ..., **run_config}``, the
        weights, the optimizer state, the history and the RNG states.
    :param bool resume: continue from ``checkpoint``; the settings other than
        the :func:`resumable` fields of :class:`TrainConfig` must equal the checkpoint's.
    :param dict run_config: more plain data stored in the checkpoint's ``config``.
    :param bool progress: show a progress bar with the running objective.

    ``config.seed`` seeds the training randomness (batches, samples of z); seed
    before building ``vae`` as well if its initial weights should be reproducible.

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
    check_fit_inputs(vae, train, test, config, batch_transform)
    train = _as_tuple(train)
    test = _as_tuple(test) if test is not None else None
    transforms = _transforms(batch_transform, len(train))
    device = train[0].device
    n_train = train[0].shape[0]
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    params = list(vae.parameters())
    stored_config = {"model": vae.config(), **(run_config or {}), "train": asdict(config)}

    ranks, rank = distributed.world_size(), distributed.rank()
    if ranks > 1:
        distributed.check_batch(config.batch_size)
    # several ranks share one data order, from a generator of its own
    order = torch.Generator().manual_seed(config.seed) if ranks > 1 else None
    history, start_epoch, state = History(), 0, None
    if resume:
        state = _load_for_resume(checkpoint, vae, config)
        history = History.from_dict(state["history"])
        start_epoch = state["epoch"]
    else:
        pyro.set_rng_seed(_rank_seed(config.seed, "train", rank) if ranks > 1 else config.seed)
    engine = make_engine(
        vae,
        engine=config.engine,
        objective=config.objective,
        num_particles=config.num_particles,
        lr=config.lr,
        optimizer_state=state["optimizer_state"] if state else None,
        example_batch=train,
    )
    if state is not None:  # after building the engine: its set-up may draw random numbers
        _restore_streams(state, config, order)
    main = distributed.is_main()

    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        desc="train",
        unit="step",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    try:
        with pyro.validation_enabled(config.validate):
            for epoch in range(start_epoch, config.epochs):
                engine.set_lr(config.lr_at(epoch))
                vae.train()
                t0 = time.perf_counter()
                total = torch.zeros((), device=device)
                seen = 0  # data points this rank has scored in the epoch
                if order is None:
                    perm = torch.randperm(n_train, device=device)
                else:
                    perm = torch.randperm(n_train, generator=order).to(device)
                for i in range(steps_per_epoch):
                    idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                    if ranks > 1:  # this rank's share of the global batch
                        idx = idx.tensor_split(ranks)[rank]
                    seen += len(idx)
                    batch = tuple(t[idx] for t in train)
                    batch = _apply(transforms, batch)
                    weight = config.kl_weight(epoch * steps_per_epoch + i, steps_per_epoch)
                    try:
                        total += engine.step(batch, weight)
                    except ValueError as err:  # raised by distribution checks (--validate)
                        if _all_finite(params):
                            raise
                        raise _diverged(epoch, checkpoint, "a parameter became non-finite") from err
                    bar.update(1)
                    if progress and main and (i + 1) % 20 == 0:
                        running = -total.item() / max(seen, 1)  # rank 0's share
                        bar.set_postfix(epoch=epoch + 1, objective=f"{running:.2f}")
                seconds = time.perf_counter() - t0
                train_objective = -distributed.all_sum(total).item() / n_train
                if not math.isfinite(train_objective) or not _all_finite(params):
                    raise _diverged(
                        epoch, checkpoint, f"the training objective was {train_objective}"
                    )
                vae.eval()
                test_elbo = math.nan
                if test is not None:
                    test_elbo = mean_elbo(
                        vae.model,
                        vae.guide,
                        test,
                        batch_size=config.eval_batch_size,
                        max_plate_nesting=vae.max_plate_nesting,
                    )
                history.append(
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
                    streams = distributed.gather_to_main(ckpt_io.rng_state())
                    if main:
                        saved = {
                            "config": stored_config,
                            "model_state": vae.state_dict(),
                            "optimizer_state": engine.optimizer_state(),
                            "epoch": epoch + 1,
                            "history": history.to_dict(),
                            "rng": streams[0],
                        }
                        if ranks > 1:
                            saved["distributed"] = {
                                "world_size": ranks,
                                "rng": streams,
                                "order": order.get_state(),
                            }
                        ckpt_io.save(checkpoint, saved)
    finally:
        bar.close()
    return history


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


def _load_for_resume(checkpoint, vae, config: TrainConfig) -> dict[str, Any]:
    if checkpoint is None:
        raise UsageError("resume needs a checkpoint path")
    state = ckpt_io.load(checkpoint)  # to the CPU: RNG states must stay there
    stored = state["config"].get("train", {})
    changed = [
        f"{k}={v!r} (checkpoint has {stored[k]!r})"
        for k, v in asdict(config).items()
        if k not in resumable(TrainConfig) and k in stored and stored[k] != v
    ]
    if changed:
        raise UsageError(
            f"cannot resume {checkpoint} with different settings: {', '.join(changed)}. "
            "Resume with the checkpoint's settings, or start a new run."
        )
    ckpt_io.load_model_state(vae, state["model_state"], str(checkpoint))
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
    return TrainingDiverged(
        f"training diverged in epoch {epoch + 1}: {what}; {kept}. "
        "Try a smaller --lr, a larger --sigma, or --validate to find the first bad value."
    )
