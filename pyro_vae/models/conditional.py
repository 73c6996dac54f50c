"""What the conditional models share: a task splits each image into the input X and
the target Y (Doersch 2016, section 3), and the model scores Y given X.

:class:`ConditionalModel` holds the task's name, builds the ``(X, Y)`` pairs of a data
set (:mod:`pyro_vae.tasks`), and draws completions; :class:`~pyro_vae.models.cvae.CVAE`
and :class:`~pyro_vae.models.regressor.Regressor` differ in how they model ``P(Y|X)``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from pyro_vae.errors import UsageError
from pyro_vae.models.base import Completions, Model, ModelData, Notation, Option
from pyro_vae.models.config import accepted_arguments
from pyro_vae.models.options import guide_family_from_options, likelihood_from_options
from pyro_vae.tasks import TASKS, conditional_data, pairs, task_for

TASK = Option(
    "--task",
    "how a conditional model splits each image into the input X and the target Y",
    choices=TASKS,
    required=True,
)


class ConditionalModel(Model):
    """Base of the models of ``P(Y|X)``: data are pairs ``(x, y)``, the target site is ``"y"``.

    Subclasses set ``self.x_dim``, ``self.y_dim`` and ``self.task`` (a task name from
    :data:`~pyro_vae.tasks.TASKS`, or ``None`` for a model trained on tensors of your own)
    and implement :meth:`completion_rows`.
    """

    notation: ClassVar[Notation] = Notation("P(Y|X)", "Q(z|X,Y)", "P(z|X)", "P(z|X,Y)")
    target: ClassVar[str] = "y"
    hints: ClassVar[dict[str, str]] = {
        "sample": "it draws Y given a condition X; use `pyro-vae complete`",
    }

    x_dim: int
    y_dim: int
    task: str | None

    @property
    def data_dims(self) -> tuple[int, int]:
        """``(x_dim, y_dim)``: the condition, then the target."""
        return (self.x_dim, self.y_dim)

    @classmethod
    def from_options(cls, options: dict[str, Any], dataset) -> ConditionalModel:
        """The model of ``--task`` for ``dataset``: X and Y sized by the task, and every
        option the constructor takes passed as that argument."""
        task = task_for(options["task"], dataset)
        accepted = accepted_arguments(cls)  # a subclass passing **kwargs on takes its parent's too
        arguments = {k: v for k, v in options.items() if k in accepted and k != "likelihood"}
        if "guide_family" in accepted and "guide" in options:
            arguments["guide_family"] = guide_family_from_options(options)
        if "image_shape" in accepted:
            arguments["image_shape"] = dataset.image_shape
        likelihood = likelihood_from_options(options, dataset)
        return cls(task.x_dim, task.y_dim, likelihood=likelihood, **arguments)

    def describe(self) -> str:
        """``"CVAE on task center-column"``."""
        return f"{type(self).__name__} on task {self.task}"

    def _task(self, dataset):
        if self.task is None:
            raise UsageError(
                f"this {type(self).__name__} was built without a task, so it cannot make its "
                "(X, Y) pairs from a data set; pass task= or give fit() the tensors"
            )
        return task_for(self.task, dataset)

    def training_data(self, dataset) -> ModelData:
        """Pairs of the task: X and Y follow the data set's binarization, the centre
        column is binarized afresh every pass (see :func:`pyro_vae.tasks.conditional_data`)."""
        cond = conditional_data(self._task(dataset).name, dataset)
        return ModelData(cond.train, cond.test, cond.transforms)

    def evaluation_data(self, dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed ``(X, Y)`` of ``split`` (see :func:`pyro_vae.tasks.pairs`)."""
        return pairs(self._task(dataset), dataset, split)

    def check_pair(self, x: torch.Tensor, y: torch.Tensor | None, what: str) -> None:
        """Shapes of a condition and an optional target, checked on every call."""
        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise UsageError(
                f"{what}: the condition x has shape {tuple(x.shape)}; expected (N, {self.x_dim})"
            )
        if y is not None and (y.ndim != 2 or y.shape != (x.shape[0], self.y_dim)):
            raise UsageError(
                f"{what}: the target y has shape {tuple(y.shape)}; "
                f"expected ({x.shape[0]}, {self.y_dim})"
            )

    def check_data(self, *data: torch.Tensor, what: str = "data") -> None:
        """Shapes of ``(x, y)`` and the support of the likelihood on ``y``."""
        if len(data) != 2:
            raise UsageError(f"{what}: a conditional model takes (x, y), got {len(data)} tensors")
        self.check_pair(*data, what)
        self.likelihood.check_data(data[1], f"the target y of {what}")

    @abc.abstractmethod
    def completion_rows(self, x: torch.Tensor, num_samples: int) -> list[tuple[str, torch.Tensor]]:
        """Labelled rows of targets drawn for the conditions ``x``: ``[(label, (N, y_dim))]``."""

    @torch.no_grad()
    def completions(
        self, dataset, split: str, num_inputs: int, num_samples: int, seed: int
    ) -> Completions:
        """Ground truth and :meth:`completion_rows` for ``num_inputs`` evenly spaced
        conditions of ``split``; the draws come from torch's global generator seeded with
        ``seed`` inside :func:`torch.random.fork_rng`, so the caller's state is kept."""
        from pyro_vae.splits import spread_subset

        task = self._task(dataset)
        x, y = pairs(task, dataset, split)
        idx = spread_subset(len(x), num_inputs).to(x.device)
        x, y = x[idx], y[idx]
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            drawn = self.completion_rows(x, num_samples)
        random = self.random_completions
        return Completions(task, x, [("ground truth", y), *drawn], num_samples if random else None)

    #: whether :meth:`completion_rows` draws at random (``num_samples`` rows) or returns
    #: one deterministic mean
    random_completions: ClassVar[bool] = True
