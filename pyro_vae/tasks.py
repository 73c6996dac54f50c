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
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from pyro_vae.errors import UsageError

TASKS = ("center-column", "quadrants-1", "quadrants-2", "quadrants-3", "label")
#: quadrants given to X, in the order they are added: top-left, bottom-left, top-right
_QUADRANT_ORDER = ("top-left", "bottom-left", "top-right")


class Task(NamedTuple):
    """A conditional task on images of one shape.

    :ivar str name: one of :data:`TASKS`.
    :ivar x_mask: ``(height * width,)`` bool, pixels in X (all False for ``label``).
    :ivar y_mask: ``(height * width,)`` bool, pixels in Y.
    :ivar int x_dim: size of X (pixels, or 10 classes for ``label``).
    :ivar int y_dim: size of Y.
    """

    name: str
    x_mask: torch.Tensor
    y_mask: torch.Tensor
    x_dim: int
    y_dim: int


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
        return Task(name, x_mask, ~x_mask, num_classes, h * w)
    return Task(name, x_mask, ~x_mask, int(x_mask.sum()), int((~x_mask).sum()))


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
