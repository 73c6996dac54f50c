"""Training settings and the record of a run: :class:`TrainConfig` and :class:`History`.

Both are plain data, stored in checkpoints and ``config.json``; :func:`pyro_vae.fit`
(:mod:`pyro_vae.train`) takes the one and returns the other.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

from pyro_vae import schema
from pyro_vae.engine import ENGINES
from pyro_vae.errors import UsageError
from pyro_vae.limits import (
    MAX_BATCH_SIZE,
    MAX_BETA,
    MAX_EPOCHS,
    MAX_KL_WARMUP,
    MAX_LR,
    MAX_PARTICLES,
    in_range,
)
from pyro_vae.objectives import OBJECTIVES

#: marks a config field that may change when a run is resumed; the others shape the
#: optimizer state or the schedule, so a checkpoint is only continued with the same values
RESUMABLE = {"resumable": True}


def resumable(config_class: type) -> frozenset[str]:
    """Fields of a config dataclass that may change when a run is resumed (marked with
    ``metadata=RESUMABLE``); the others define the run."""
    return frozenset(f.name for f in fields(config_class) if f.metadata.get("resumable"))


#: the counts of :class:`TrainConfig` and the most each may be (see :mod:`pyro_vae.limits`)
COUNT_LIMITS = {
    "epochs": MAX_EPOCHS,
    "batch_size": MAX_BATCH_SIZE,
    "num_particles": MAX_PARTICLES,
    "eval_batch_size": MAX_BATCH_SIZE,
}
#: learning-rate schedules of :class:`TrainConfig`
LR_SCHEDULES = ("constant", "burda")
#: stages of Burda et al.'s schedule: 3^i epochs each, i = 0..7
BURDA_STAGES = 8


@dataclass
class TrainConfig:
    """Optimization settings. Plain data: stored in checkpoints and ``config.json``.

    :meth:`check` holds every setting to its range (:mod:`pyro_vae.limits`): ``lr`` in
    ``(0, 1]``, ``beta`` in ``(0, 1000]``, ``kl_warmup`` in ``[0, 1e6]`` epochs, and each
    count at least 1 and at most its bound (:data:`COUNT_LIMITS`).
    """

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
        """:raises UsageError: for any out-of-range or unknown setting (naming it)."""
        for name, valid in (
            ("objective", OBJECTIVES),
            ("engine", ENGINES),
            ("lr_schedule", LR_SCHEDULES),
        ):
            if getattr(self, name) not in valid:
                raise UsageError(
                    f"unknown {{{name}}} {getattr(self, name)!r}; valid names: {', '.join(valid)}",
                    settings=(name,),
                )
        for name, most in COUNT_LIMITS.items():
            value = getattr(self, name)
            integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if not (integer and value >= 1):
                raise UsageError(
                    f"{{{name}}} must be an integer of at least 1, got {value!r}",
                    settings=(name,),
                )
            if value > most:
                raise UsageError(
                    f"{{{name}}} must be at most {most} (pyro_vae.limits), got {value}",
                    settings=(name,),
                )
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"{{seed}} must be in [0, 2**32), got {self.seed}", settings=("seed",))
        for name, most in (("lr", MAX_LR), ("beta", MAX_BETA)):
            value = getattr(self, name)
            if not in_range(value, 0, most, open_low=True):
                raise UsageError(
                    f"{{{name}}} must be a finite number in (0, {most:g}], got {value}",
                    settings=(name,),
                )
        if not in_range(self.kl_warmup, 0, MAX_KL_WARMUP):
            raise UsageError(
                f"{{kl_warmup}} must be a finite number of epochs in [0, {MAX_KL_WARMUP:g}], "
                f"got {self.kl_warmup}",
                settings=("kl_warmup",),
            )
        if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup > 0):
            raise UsageError(
                "{beta} and {kl_warmup} weight the KL term of an ELBO; the IWAE bound has no "
                "separate KL term. Use {objective} elbo or mean-field with them, or drop them.",
                settings=("beta", "kl_warmup", "objective"),
            )

    @classmethod
    def from_dict(cls, values: dict, where: str = "train") -> TrainConfig:
        """Settings read back from a file, each checked against its type and range;
        a field left out takes its default.

        :param str where: the file and block (``config.json: train``), for messages.
        :raises UsageError: naming ``where`` and the field.
        """
        config = schema.build(cls, values, where)
        try:
            config.check()
        except UsageError as err:
            raise UsageError(f"{where}: {err}; {schema.REMEDY}") from err
        return config

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
    def from_dict(cls, d: dict[str, list], source: str = "history") -> History:
        """Inverse of :meth:`to_dict`; also reads ``history.json``, whose ``null`` stands
        for NaN (a test ELBO without test data).

        :param str source: where ``d`` was read, for messages.
        :raises UsageError: unless ``d`` holds every field, each a list of numbers, all
            of one length.
        """
        if not isinstance(d, dict):
            raise UsageError(
                f"{source} must be an object of per-epoch lists, not "
                f"{schema.described(d)}; {schema.REMEDY}"
            )
        names = [f.name for f in fields(cls)]
        if set(d) != set(names):
            raise UsageError(
                f"{source} must hold the lists {', '.join(names)}; it holds "
                f"{', '.join(map(str, d)) or 'none'}; {schema.REMEDY}"
            )
        for name, values in d.items():
            if not isinstance(values, (list, tuple)) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                for v in values
            ):
                raise UsageError(f"{source}.{name} must be a list of numbers; {schema.REMEDY}")
        if len({len(values) for values in d.values()}) > 1:
            lengths = ", ".join(f"{k} {len(v)}" for k, v in d.items())
            raise UsageError(
                f"{source} holds lists of different lengths ({lengths}); {schema.REMEDY}"
            )
        return cls(**{k: [math.nan if v is None else v for v in d[k]] for k in names})
