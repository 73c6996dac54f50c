"""Plain records of the model contract (:mod:`pyro_vae.models.base`): how reports name a
model's quantities, the tensors it trains on, and the completions it draws."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from pyro_vae.tasks import Task


class Notation(NamedTuple):
    """How reports name a model's quantities, in Doersch's notation."""

    data: str = "P(X)"  # what the evaluator estimates
    guide: str = "Q(z|X)"
    prior: str = "P(z)"
    posterior: str = "P(z|X)"


class ModelData(NamedTuple):
    """The tensors a model trains on, as :meth:`Model.training_data` makes them.

    :ivar train: training tensors, sharing dimension 0, before the per-batch transforms.
    :ivar test: test tensors, fixed (one binarization or dequantization, if any).
    :ivar transforms: one callable (or ``None``) per tensor, applied to every training
        batch: pass as ``fit(..., batch_transform=transforms)``.
    """

    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    transforms: tuple[Callable | None, ...]


class Completions(NamedTuple):
    """Targets drawn for conditions, as :meth:`Model.completions` returns them.

    :ivar task: how a condition X and a target Y make one image (:mod:`pyro_vae.tasks`).
    :ivar x: the conditions, ``(n, x_dim)``.
    :ivar rows: ``[(label, y)]``, ``y`` of shape ``(n, y_dim)``: the ground truth first,
        then the draws.
    :ivar num_samples: how many random completions each condition has; ``None`` for a
        model whose completion is one deterministic mean.
    """

    task: Task
    x: torch.Tensor
    rows: list[tuple[str, torch.Tensor]]
    num_samples: int | None
