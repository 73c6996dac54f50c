"""Conditional tasks: split each image into an observed condition X and a target Y.

Doersch (section 3) models P(Y|X) with a conditional VAE, X the input and Y the
output. The tasks here build X and Y from any image data set:

- ``center-column`` (Doersch's MNIST example): X is the centre column of pixels,
  Y the other columns. X is binarized at random with probability equal to the
  intensity, resampled each pass (:func:`binarize_condition`).
- ``quadrants-1``, ``quadrants-2``, ``quadrants-3`` (Sohn, Lee and Yan 2015): X is
  the top-left quadrant; the top-left and bottom-left (the left half); or all but
  the bottom-right. Y is the rest.
- ``label``: X is the one-hot class label, Y the whole image (class-conditional
  generation).

:func:`conditional_data` turns a loaded :class:`~pyro_vae.data.Dataset` into
training and test pairs ``(X, Y)`` with per-batch transforms for :func:`~pyro_vae.fit`.
Y follows the data set's binarization (dynamic: a fresh sample every pass; the
test split holds one fixed sample); X is made from the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.nn import functional as F

from pyro_vae import data as data_mod
from pyro_vae.errors import UsageError
from pyro_vae.splits import batch_transform, evaluation_split

TASKS = ("center-column", "quadrants-1", "quadrants-2", "quadrants-3", "label")
#: quadrants given to X, in the order they are added: top-left, bottom-left, top-right
_QUADRANT_ORDER = ("top-left", "bottom-left", "top-right")


class Task(NamedTuple):
    """A conditional task on images of one shape.

    :ivar name: one of :data:`TASKS`.
    :ivar x_mask: ``(height * width,)`` bool, pixels in X (all False for ``label``).
    :ivar y_mask: ``(height * width,)`` bool, pixels in Y.
    :ivar x_dim: size of X (pixels, or 10 classes for ``label``).
    :ivar y_dim: size of Y.
    :ivar image_shape: ``(height, width)`` of the images.
    """

    name: str
    x_mask: torch.Tensor
    y_mask: torch.Tensor
    x_dim: int
    y_dim: int
    image_shape: tuple[int, int]


def make_task(name: str, image_shape: tuple[int, int], num_classes: int = 10) -> Task:
    """Masks and sizes of task ``name`` for images of ``image_shape``.

    :raises UsageError: for an unknown task name.
    """
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}")
    h, w = image_shape
    grid = torch.zeros(h, w, dtype=torch.bool)
    if name == "center-column":
        grid[:, w // 2] = True
    elif name.startswith("quadrants-"):
        regions = {
            "top-left": (slice(0, h // 2), slice(0, w // 2)),
            "bottom-left": (slice(h // 2, h), slice(0, w // 2)),
            "top-right": (slice(0, h // 2), slice(w // 2, w)),
        }
        for quadrant in _QUADRANT_ORDER[: int(name[-1])]:
            grid[regions[quadrant]] = True
    x_mask = grid.flatten()
    if name == "label":
        return Task(name, x_mask, ~x_mask, num_classes, h * w, (h, w))
    return Task(name, x_mask, ~x_mask, int(x_mask.sum()), int((~x_mask).sum()), (h, w))


def split(task: Task, images: torch.Tensor, labels: torch.Tensor | None = None):
    """``(X, Y)`` for flattened ``images`` ``(N, height * width)``.

    :param labels: ``(N,)`` class labels, needed for the ``label`` task.
    :raises UsageError: if the images do not match the task or labels are missing.
    """
    if images.ndim != 2 or images.shape[1] != task.x_mask.numel():
        raise UsageError(
            f"task {task.name!r} expects flattened images of {task.x_mask.numel()} pixels, "
            f"got shape {tuple(images.shape)}"
        )
    if task.name == "label":
        if labels is None:
            raise UsageError("the label task needs class labels; this data set has none")
        return F.one_hot(labels.long(), task.x_dim).to(images.dtype), images
    mask = task.x_mask.to(images.device)
    return images[:, mask], images[:, ~mask]


def merge(task: Task, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reassemble images from X and Y (for pictures); ``label`` returns Y.

    :param x: ``(..., x_dim)``; :param y: ``(..., y_dim)``.
    """
    if task.name == "label":
        return y
    out = y.new_zeros(*y.shape[:-1], task.x_mask.numel())
    out[..., task.x_mask.to(y.device)] = x.expand(*y.shape[:-1], x.shape[-1])
    out[..., task.y_mask.to(y.device)] = y
    return out


def binarize_condition(x: torch.Tensor) -> torch.Tensor:
    """Doersch's centre-column input: a fresh Bernoulli sample with ``P(1)`` = intensity."""
    return torch.bernoulli(x)


#: seed of the one fixed binarization of the centre column used for scoring
CONDITION_SEED = 20160619


class ConditionalData(NamedTuple):
    """Pairs ``(X, Y)`` of a task, ready for :func:`pyro_vae.fit`.

    :ivar task: the task.
    :ivar train: ``(X, Y)`` of the training split, before the per-batch transforms.
    :ivar test: ``(X, Y)`` of the test split, fixed (one binarization, if any).
    :ivar transforms: ``(for X, for Y)``, each a callable or ``None``: pass as
        ``fit(..., batch_transform=transforms)``.
    """

    task: Task
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    transforms: tuple[Callable | None, Callable | None]


def task_for(name: str, dataset: data_mod.Dataset) -> Task:
    """:func:`make_task` for the images (and labels) of ``dataset``.

    :raises UsageError: for an unknown task, a data set without images, or the
        ``label`` task on a data set without labels.
    """
    if dataset.image_shape is None:
        raise UsageError(
            f"conditional tasks split images, and {dataset.name} holds no image shape; "
            "use an image data set"
        )
    if name != "label":
        return make_task(name, dataset.image_shape)
    missing = [s for s, t in (("train", dataset.y_train), ("test", dataset.y_test)) if t is None]
    if missing:
        raise UsageError(
            f"the label task needs class labels, and {dataset.name} has none for its "
            f"{' and '.join(missing)} split; choose a data set with labels or another "
            "{task}",
            settings=("task",),
        )
    # the one-hot width is fixed by the training labels: an unseen class has no input
    num_classes = int(dataset.y_train.max()) + 1
    if len(dataset.y_test) and int(dataset.y_test.max()) >= num_classes:
        raise UsageError(
            f"{dataset.name}: the test split has class {int(dataset.y_test.max())}, which no "
            f"training image has (classes 0 to {num_classes - 1}); the label task cannot "
            "condition on it"
        )
    return make_task(name, dataset.image_shape, num_classes)


def pairs(task: Task, dataset: data_mod.Dataset, split_name: str = "test"):
    """Fixed ``(X, Y)`` of one split for scoring (see :func:`pyro_vae.splits.evaluation_split`).

    The centre column is binarized once with :data:`CONDITION_SEED`, as the tutorial
    feeds the network a binary column (a no-op on images binarized already).

    :param str split_name: ``"test"`` or ``"train"``.
    """
    labels = dataset.y_test if split_name == "test" else dataset.y_train
    x, y = split(task, evaluation_split(dataset, split_name), labels)
    if task.name == "center-column":
        if dataset.dequantized:  # back to the grey level k / (levels - 1) that training sees
            levels = dataset.levels
            x = ((x * levels).floor().clamp(max=levels - 1)) / (levels - 1)
        x = data_mod.binarize_fixed(x, seed=CONDITION_SEED)
    return x, y


def conditional_data(name: str, dataset: data_mod.Dataset) -> ConditionalData:
    """Training and test pairs of task ``name`` on ``dataset``.

    The pixel transform of the data set (dynamic binarization or dequantization,
    :func:`pyro_vae.splits.batch_transform`) applies to X and Y alike; the centre
    column is binarized afresh every pass whatever the mode, as in the tutorial;
    a one-hot label is never transformed.

    :raises UsageError: as :func:`task_for`.
    """
    task = task_for(name, dataset)
    pixel = batch_transform(dataset)
    if task.name == "label":
        x_transform = None
    elif task.name == "center-column":
        x_transform = binarize_condition
    else:
        x_transform = pixel
    train = split(task, dataset.x_train, dataset.y_train)
    return ConditionalData(task, train, pairs(task, dataset, "test"), (x_transform, pixel))
