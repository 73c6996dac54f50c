"""Training by stochastic variational inference.

:func:`fit` optimizes any model/guide pair that exposes ``model``, ``guide``
and ``parameters()`` (a :class:`~pyro_vae.vae.VAE`, say) with one of Pyro's
objectives, on data held as tensors. Two engines compute the same estimator:

- ``"svi"``: :class:`pyro.infer.SVI` with :class:`pyro.optim.Adam`, the textbook
  Pyro loop. ``pyro.optim`` keeps one torch optimizer per parameter tensor and
  looks parameters up in the param store each step.
- ``"fast"`` (default): the objective's ``differentiable_loss`` (or
  ``loss_and_grads`` for ``RenyiELBO``) with one :class:`torch.optim.Adam` over
  ``module.parameters()``. Adam acts element-wise, so the updates are the same
  as ``"svi"``'s; only the per-step bookkeeping is gone.

The KL weight (beta) and its linear warm-up scale the log-densities of every
latent sample site in both model and guide through a
:class:`~pyro.poutine.scale_messenger.ScaleMessenger`, so for ``Trace_ELBO``
the objective is ``E_q[log P(x|z)] - beta * KL``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.scale_messenger import ScaleMessenger
from tqdm.auto import tqdm

from pyro_vae import checkpoint as ckpt_io
from pyro_vae.errors import TrainingDiverged, UsageError

OBJECTIVES = ("elbo", "mean-field", "iwae")
ENGINES = ("fast", "svi")


@dataclass
class TrainConfig:
    """Optimization settings. Plain data: stored in checkpoints and ``config.json``."""

    epochs: int = 50  # passes over the training split
    batch_size: int = 128  # data points per gradient step
    lr: float = 1e-3  # Adam step size
    # "elbo": Trace_ELBO (Monte Carlo KL); "mean-field": TraceMeanField_ELBO
    # (analytic KL, Doersch eq. 7); "iwae": RenyiELBO(alpha=0), the IWAE bound
    objective: str = "elbo"
    num_particles: int = 1  # samples of z per data point per step (k of IWAE-k)
    beta: float = 1.0  # KL weight after warm-up; 1 is the true ELBO
    kl_warmup: float = 0.0  # epochs over which the KL weight rises linearly to beta
    engine: str = "fast"  # "fast" or "svi"; see the module docstring
    seed: int = 0  # seeds torch, numpy and random at the start of a fresh run
    validate: bool = False  # distribution argument checks in the hot loop (slow)
    eval_batch_size: int = 1000  # data points per batch when scoring the test split

    def check(self) -> None:
        """:raises UsageError: for any out-of-range or unknown setting."""
        if self.objective not in OBJECTIVES:
            raise UsageError(
                f"unknown objective {self.objective!r}; valid names: {', '.join(OBJECTIVES)}"
            )
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; valid names: {', '.join(ENGINES)}")
        for name in ("epochs", "batch_size", "num_particles", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"lr must be > 0, got {self.lr}")
        if not self.beta > 0:
            raise UsageError(
                f"beta must be > 0, got {self.beta} (poutine.scale needs a positive weight)"
            )
        if self.kl_warmup < 0:
            raise UsageError(f"kl_warmup must be >= 0 epochs, got {self.kl_warmup}")
        if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup > 0):
            raise UsageError(
                "beta and KL warm-up weight the KL term of an ELBO; the IWAE bound has no "
                "separate KL term. Use --objective elbo or mean-field with them, or drop them."
            )


@dataclass
class History:
    """Per-epoch record of a run, in nats per data point."""

    epoch: list[int] = field(default_factory=list)
    #: mean training objective over the epoch's steps (the ELBO estimate when beta = 1)
    train_objective: list[float] = field(default_factory=list)
    #: ELBO of the test split after the epoch (beta = 1), or NaN without test data
    test_elbo: list[float] = field(default_factory=list)
    #: KL weight at the end of the epoch
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


class LatentScaleMessenger(ScaleMessenger):
    """``poutine.scale`` restricted to latent (unobserved) sample sites.

    See :func:`scale_latents`.
    """

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            super()._process_message(msg)


def scale_latents(fn: Callable, scale: float) -> Callable:
    """Wrap a model or guide so the log-densities of its latent sites are multiplied by ``scale``.

    Applied to both model and guide, it multiplies ``log P(z)`` and ``log Q(z|x)``
    by ``scale`` and leaves ``log P(x|z)`` alone: for ``Trace_ELBO`` the objective
    becomes ``E_q[log P(x|z)] - scale * KL``, the beta-VAE weight and the KL
    warm-up of Bowman et al. (2016) and Sønderby et al. (2016).

    :param fn: a Pyro model or guide.
    :param float scale: the KL weight; must be > 0, as for ``poutine.scale``.
    :returns: the wrapped callable.
    """
    return LatentScaleMessenger(scale)(fn)


def make_objective(name: str, num_particles: int = 1, max_plate_nesting: int = 1):
    """Build a Pyro objective by name.

    :param str name: ``"elbo"``, ``"mean-field"`` or ``"iwae"``.
    :param int num_particles: samples per data point, vectorized when > 1.
    :param int max_plate_nesting: plates the model nests (needed to vectorize particles).
    :returns: a :class:`pyro.infer.ELBO` instance.
    """
    kwargs = dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    if name == "elbo":
        return Trace_ELBO(**kwargs)
    if name == "mean-field":
        return TraceMeanField_ELBO(**kwargs)
    if name == "iwae":
        return RenyiELBO(alpha=0.0, **kwargs)
    raise UsageError(f"unknown objective {name!r}; valid names: {', '.join(OBJECTIVES)}")


@torch.no_grad()
def mean_elbo(
    model: Callable,
    guide: Callable,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    num_particles: int = 1,
    batch_size: int = 1000,
    max_plate_nesting: int = 1,
) -> float:
    """ELBO per data point, averaged over ``data`` (beta = 1), in nats.

    :param model: Pyro model taking the data tensors as positional arguments.
    :param guide: matching guide.
    :param data: a tensor or tuple of tensors sharing their first dimension.
    :param int num_particles: samples of z per data point.
    :param int batch_size: data points per forward pass.
    """
    data = _as_tuple(data)
    objective = make_objective("elbo", num_particles, max_plate_nesting)
    n = data[0].shape[0]
    total = torch.zeros((), device=data[0].device)
    for start in range(0, n, batch_size):
        batch = tuple(t[start : start + batch_size] for t in data)
        total += objective.differentiable_loss(model, guide, *batch)
    return -total.item() / n


def fit(
    vae,
    train: torch.Tensor | Sequence[torch.Tensor],
    test: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    config: TrainConfig | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> History:
    """Train ``vae`` by SVI and return its :class:`History`.

    :param vae: an :class:`torch.nn.Module` with ``model`` and ``guide`` methods
        whose positional arguments are the data tensors.
    :param train: training tensor, or tuple of tensors sharing dimension 0, on
        the training device.
    :param test: held-out data in the same form, scored each epoch; optional.
    :param TrainConfig config: optimization settings.
    :param batch_transform: applied to the first tensor of every training
        mini-batch (e.g. :func:`pyro_vae.data.binarize_batch`).
    :param checkpoint: file written atomically after every epoch.
    :param bool resume: continue from ``checkpoint`` instead of starting afresh.
    :param dict run_config: stored in the checkpoint under ``"config"``.
    :param bool progress: show a progress bar with the running objective.

    ``config.seed`` seeds the training randomness (batches, samples of z); seed
    before building ``vae`` as well if its initial weights should be reproducible.

    :raises UsageError: bad settings or data, before any training step.
    :raises TrainingDiverged: the objective or a parameter became non-finite;
        the checkpoint of the last good epoch is kept.
    """
    config = config or TrainConfig()
    config.check()
    train = _as_tuple(train)
    test = _as_tuple(test) if test is not None else None
    n_train = train[0].shape[0]
    if n_train == 0:
        raise UsageError("the training split is empty")
    if config.batch_size > n_train:
        raise UsageError(
            f"batch size {config.batch_size} is larger than the training split "
            f"({n_train} data points); use --batch-size {n_train} or less"
        )
    for name, tensors in (("training", train), ("test", test or ())):
        for t in tensors:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise UsageError(
                    f"the {name} data hold NaN or infinite values; remove or impute them"
                )
    check_data = getattr(vae, "check_data", None)
    if check_data is not None:
        if batch_transform is None:
            check_data(train[0], "the training split")
        if test is not None:
            check_data(test[0], "the test split")
    if resume and checkpoint is None:
        raise UsageError("resume needs a checkpoint path")

    max_plate_nesting = getattr(vae, "max_plate_nesting", 1)
    objective = make_objective(config.objective, config.num_particles, max_plate_nesting)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    warmup_steps = config.kl_warmup * steps_per_epoch
    params = list(vae.parameters())

    def kl_weight(step: int) -> float:
        if warmup_steps <= 0:
            return config.beta
        # starts above zero: poutine.scale rejects a zero weight
        return config.beta * min(1.0, (step + 1) / warmup_steps)

    history = History()
    start_epoch = 0
    if resume and Path(checkpoint).is_file():
        state = ckpt_io.load(checkpoint, map_location=train[0].device)
        ckpt_io.load_model_state(vae, state["model_state"], str(checkpoint))
        history = History.from_dict(state["history"])
        start_epoch = state["epoch"]
        optimizer_state = state["optimizer_state"]
    else:
        pyro.set_rng_seed(config.seed)
        optimizer_state = None

    step_fn, get_optimizer_state = _make_engine(
        vae, objective, config, params, optimizer_state, train
    )
    if start_epoch > 0:  # after building the engine: its set-up may draw random numbers
        ckpt_io.set_rng_state(state["rng"])

    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        desc="train",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with pyro.validation_enabled(config.validate):
            for epoch in range(start_epoch, config.epochs):
                vae.train()
                t0 = time.perf_counter()
                total = torch.zeros((), device=train[0].device)
                perm = torch.randperm(n_train, device=train[0].device)
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                    batch = tuple(t[idx] for t in train)
                    if batch_transform is not None:
                        batch = (batch_transform(batch[0]), *batch[1:])
                    try:
                        loss = step_fn(batch, kl_weight(step))
                    except ValueError as err:
                        if _all_finite(params):
                            raise
                        raise _diverged(epoch, checkpoint, "a parameter became non-finite") from err
                    total += loss
                    bar.update(1)
                    if progress and (i + 1) % 20 == 0:
                        bar.set_postfix(
                            epoch=epoch + 1,
                            objective=f"{-total.item() / ((i + 1) * config.batch_size):.2f}",
                        )
                seconds = time.perf_counter() - t0
                train_objective = -total.item() / n_train
                if not math.isfinite(train_objective) or not _all_finite(params):
                    raise _diverged(
                        epoch, checkpoint, f"the training objective was {train_objective}"
                    )
                vae.eval()
                test_elbo = (
                    mean_elbo(
                        vae.model,
                        vae.guide,
                        test,
                        batch_size=config.eval_batch_size,
                        max_plate_nesting=max_plate_nesting,
                    )
                    if test is not None
                    else math.nan
                )
                history.append(
                    epoch=epoch + 1,
                    train_objective=train_objective,
                    test_elbo=test_elbo,
                    kl_weight=kl_weight((epoch + 1) * steps_per_epoch - 1),
                    seconds=seconds,
                )
                bar.set_postfix(
                    epoch=epoch + 1,
                    objective=f"{train_objective:.2f}",
                    test_elbo=f"{test_elbo:.2f}",
                )
                if checkpoint is not None:
                    ckpt_io.save(
                        checkpoint,
                        {
                            "config": run_config or {"train": asdict(config)},
                            "model_state": vae.state_dict(),
                            "optimizer_state": get_optimizer_state(),
                            "epoch": epoch + 1,
                            "history": history.to_dict(),
                            "rng": ckpt_io.rng_state(),
                        },
                    )
    finally:
        bar.close()
    return history


def _make_engine(vae, objective, config, params, optimizer_state, train):
    """Return ``(step(batch, kl_weight) -> loss tensor, optimizer_state() -> dict)``."""

    def scaled(fn, weight):
        return fn if weight == 1.0 else scale_latents(fn, weight)

    if config.engine == "fast":
        optimizer = torch.optim.Adam(params, lr=config.lr)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        has_differentiable_loss = hasattr(objective, "differentiable_loss")

        def step(batch, weight):
            model, guide = scaled(vae.model, weight), scaled(vae.guide, weight)
            optimizer.zero_grad(set_to_none=True)
            if has_differentiable_loss:
                loss = objective.differentiable_loss(model, guide, *batch)
                loss.backward()
                loss = loss.detach()
            else:  # RenyiELBO: only loss_and_grads, which returns a float
                loss = torch.tensor(objective.loss_and_grads(model, guide, *batch))
            optimizer.step()
            return loss

        return step, optimizer.state_dict

    # engine == "svi": pyro.optim keeps per-parameter optimizers keyed by param-store name,
    # which embeds the instance's name; store their state under state_dict keys instead.
    optim = pyro.optim.Adam({"lr": config.lr})
    names = {id(p): k for k, p in vae.named_parameters()}
    store = pyro.get_param_store()
    if optimizer_state is not None:
        # run model and guide once so every parameter is registered, then map names
        with torch.no_grad(), pyro.poutine.block():
            probe = tuple(t[:1] for t in train)
            pyro.poutine.trace(vae.guide).get_trace(*probe)
            pyro.poutine.trace(vae.model).get_trace(*probe)
        by_key = dict(vae.named_parameters())
        optim.set_state({store.param_name(by_key[k]): s for k, s in optimizer_state.items()})
    svi_by_weight: dict[float, SVI] = {}

    def step(batch, weight):
        svi = svi_by_weight.get(weight)
        if svi is None:  # one SVI per distinct weight; constant after warm-up
            svi = SVI(scaled(vae.model, weight), scaled(vae.guide, weight), optim, objective)
            svi_by_weight.clear()
            svi_by_weight[weight] = svi
        return torch.tensor(svi.step(*batch))

    def get_state():
        return {names[id(p)]: o.state_dict() for p, o in optim.optim_objs.items() if id(p) in names}

    return step, get_state


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
