"""Every figure, drawn from tensors and results. Built on
:class:`matplotlib.figure.Figure` directly, so no GUI backend is selected and nothing
changes global pyplot state.

Models return tensors (:meth:`~pyro_vae.models.base.Model.sample`,
:meth:`~pyro_vae.models.base.Model.reconstruct`,
:meth:`~pyro_vae.models.base.Model.completions`); :func:`training_figures` chooses what
to draw for a run from what its model can do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from pyro_vae.io import write_atomic


def image_grid(
    images: torch.Tensor, image_shape: Sequence[int], ncols: int | None = None, pad: int = 1
) -> np.ndarray:
    """Tile flattened images into one 2-D array, ``pad`` pixels apart.

    :param images: ``(n, height * width)`` tensor (values clipped to ``[0, 1]``).
    :param image_shape: ``(height, width)``.
    :param int ncols: images per row; ``ceil(sqrt(n))`` by default.
    :returns: array of shape ``(rows * (h + pad) - pad, ncols * (w + pad) - pad)``.
    """
    h, w = image_shape
    imgs = images.detach().float().cpu().clamp(0, 1).reshape(-1, h, w).numpy()
    n = len(imgs)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad), dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return grid


def grid_figure(
    images: torch.Tensor, image_shape: Sequence[int], title: str, ncols: int | None = None
):
    """A figure showing ``images`` as a grey-scale grid (see :func:`image_grid`)."""
    from matplotlib.figure import Figure

    grid = image_grid(images, image_shape, ncols)
    height = 6 * grid.shape[0] / grid.shape[1]
    fig = Figure(figsize=(6, max(height, 1.5) + 0.5))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


def reconstruction_figure(
    x: torch.Tensor, recon: torch.Tensor, image_shape: Sequence[int], title: str, ncols: int = 8
):
    """Inputs and reconstructions in alternating rows (inputs, then their reconstructions)."""
    ncols = max(1, min(ncols, len(x)))
    n = (len(x) // ncols) * ncols
    x, recon = x[:n].cpu(), recon[:n].cpu()
    rows = torch.stack(
        [x.reshape(-1, ncols, x.shape[-1]), recon.reshape(-1, ncols, x.shape[-1])], dim=1
    )
    return grid_figure(rows.reshape(-1, x.shape[-1]), image_shape, title, ncols=ncols)


def history_figure(history, title: str = "training"):
    """Training objective and test ELBO (nats per data point) against epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(history.epoch, history.train_objective, label="train objective (running)")
    if not all(math.isnan(v) for v in history.test_elbo):
        ax.plot(history.epoch, history.test_elbo, label="test ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per data point")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save ``fig`` as PNG, atomically."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _target_name(target: str | None) -> str:
    """The modelled density as reports name it: ``"P(X)"``, ``"P(Y|X)"``; reports written
    by version 0.1 stored ``"X"`` or ``"Y|X"``."""
    if not target:
        return "P(X)"
    return target if target.startswith("P(") else f"P({target})"


def bounds_figure(report: dict):
    """IWAE bounds ``L_k`` against k (log axis), rising from the ELBO towards ``log P(X)``.

    Error bars are standard errors of the per-image differences from the ELBO,
    the uncertainty of the rise; image-to-image spread would swamp it. The title gives
    the naive estimate (z from the prior) and its K where the report has one.

    :param dict report: as written to ``eval.json`` by ``pyro-vae evaluate``.
    """
    from matplotlib.figure import Figure

    s, paired = report["summary"], report["minus_elbo"]
    elbo = s["elbo"]["mean"]
    ks = report["ks"]
    means = [elbo + (paired[f"L_{k}"]["mean"] if k > 1 else 0.0) for k in ks]
    errs = [paired[f"L_{k}"]["stderr"] if k > 1 else 0.0 for k in ks]
    k_max = report["num_samples"]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.errorbar(
        ks, means, yerr=errs, marker="o", capsize=3, label="IWAE bound $L_k$ ($L_1$ = ELBO)"
    )
    log_px, log_px_se = elbo + paired["log_px"]["mean"], paired["log_px"]["stderr"]
    p = _target_name(report.get("target"))
    ax.axhline(log_px, color="C1", linestyle="--", label=f"log {p}, z from Q (K={k_max})")
    ax.axhspan(log_px - log_px_se, log_px + log_px_se, color="C1", alpha=0.15)
    ax.plot([k_max], [log_px], marker="s", color="C1", linestyle="none")
    ax.set_xscale("log")
    ax.set_xlabel("k (samples per bound)")
    ax.set_ylabel("nats per image (mean over images)")
    # no naive pass (--naive-samples 0): no line for it; reports of earlier versions
    # ran it at K = num_samples and lack its own K
    k_naive = report.get("num_samples_prior", k_max if "log_px_prior" in s else None)
    naive = (
        f"naive estimate (z from the prior, K={k_naive}): {s['log_px_prior']['mean']:.2f}\n"
        if k_naive
        else ""
    )
    ax.set_title(
        f"{report['dataset']} {report['split']}, {report['num_points']} images: "
        f"bounds rise towards log {p}\n{naive}"
        "error bars: standard error of the gain over the ELBO",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def labelled_rows_figure(rows, image_shape: Sequence[int], title: str):
    """One row of images per label: ``rows`` is a list of ``(label, images)`` pairs,
    ``images`` of shape ``(n, height * width)``; rows may differ in length."""
    from matplotlib.figure import Figure

    ncols = max(len(images) for _, images in rows)
    fig = Figure(figsize=(1.0 + 0.75 * ncols, 0.85 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, images) in zip(axes, rows, strict=True):
        ax.imshow(image_grid(images, image_shape, ncols=ncols), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


#: RGB tint of the observed condition X in completion figures (Y stays grey)
CONDITION_TINT = (0.3, 0.6, 1.0)
CONDITION_OFFSET = (0.0, 0.1, 0.3)


def condition_rgb(task, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Images reassembled from ``(X, Y)`` as RGB ``(n, height, width, 3)``, with the
    pixels of X tinted blue so that the condition stands out from the completion.

    :param task: a :class:`pyro_vae.tasks.Task`.
    """
    from pyro_vae.tasks import merge

    h, w = task.image_shape
    image = merge(task, x, y).detach().float().cpu().clamp(0, 1).reshape(-1, h, w)
    rgb = image.unsqueeze(-1).repeat(1, 1, 1, 3)
    if task.name != "label":
        m = task.x_mask.cpu().reshape(h, w)
        # black becomes dark blue, white light blue
        rgb[:, m] = rgb[:, m] * torch.tensor(CONDITION_TINT) + torch.tensor(CONDITION_OFFSET)
    return rgb.clamp(0, 1)


def completion_figure(task, x: torch.Tensor, rows, title: str | None = None):
    """Conditional completions: one column per condition, one row per ``(label, Y)``.

    :param task: a :class:`pyro_vae.tasks.Task`.
    :param x: conditions ``(n, x_dim)``.
    :param rows: ``(label, y)`` pairs, ``y`` of shape ``(n, y_dim)``: the ground
        truth, a regressor's mean, samples of a CVAE.
    :param str title: default names the condition and the target.
    """
    from matplotlib.figure import Figure

    n = len(x)
    fig = Figure(figsize=(1.1 * n + 1.6, 1.15 * len(rows) + 0.7))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, y) in enumerate(rows):
        for c, image in enumerate(condition_rgb(task, x, y)):
            ax = axes[r, c]
            ax.imshow(image.numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if task.name == "label" and r == 0:
                ax.set_title(f"X = {int(x[c].argmax())}", fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title is None:
        if task.name == "label":
            title = "label: X = the one-hot class label (above each column), Y = the image"
        else:
            title = f"{task.name}: X = the blue pixels, Y = the rest"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


#: every file :func:`training_figures` may write, for a folder that is reused
TRAINING_FIGURES = ("loss.png", "samples.png", "reconstructions.png", "completions.png")
#: prior samples, test reconstructions, and conditions completed in a run's figures
RUN_SAMPLES, RUN_RECONSTRUCTIONS, RUN_CONDITIONS, RUN_COMPLETIONS = 64, 32, 8, 5


@torch.no_grad()
def training_figures(model, dataset, history, seed: int) -> dict[str, object]:
    """``{file name: figure}`` for the end of a training run: the training curves, and
    what ``model`` can draw (:meth:`~pyro_vae.models.base.Model.supports`):

    - ``samples.png``: 64 draws of ``model.sample`` from a generator seeded with
      ``seed``, for a model of images that samples;
    - ``reconstructions.png``: 32 evenly spaced test images beside
      ``model.reconstruct``, for a model of images that reconstructs;
    - ``completions.png``: 5 completions of 8 test conditions (:func:`completions_figure`).

    :param model: a trained :class:`~pyro_vae.models.base.Model`, in eval mode.
    :param dataset: the :class:`~pyro_vae.data.Dataset` it was trained on.
    :param history: its :class:`~pyro_vae.train.History`.
    """
    from pyro_vae.splits import spread_subset

    title = f"{dataset.name}, {model.describe()}: ELBO per data point"
    figures: dict[str, object] = {"loss.png": history_figure(history, title)}
    shape = model.image_shape
    if shape is not None and model.supports("sample"):
        generator = torch.Generator(device=dataset.x_test.device).manual_seed(seed)
        columns = model.sample_columns
        n = RUN_SAMPLES if columns is None else -(-RUN_SAMPLES // columns) * columns
        figures["samples.png"] = grid_figure(
            model.sample(n, generator=generator),
            shape,
            f"{n} samples: the prior's z, mean of P(x|z)",
            ncols=columns,
        )
    if shape is not None and model.supports("reconstruct"):
        x = dataset.x_test
        x = x[spread_subset(len(x), RUN_RECONSTRUCTIONS).to(x.device)]
        figures["reconstructions.png"] = reconstruction_figure(
            x,
            model.reconstruct(x),
            shape,
            "test images (odd rows) and reconstructions (even rows)",
        )
    if model.supports("completions"):
        drawn = model.completions(dataset, "test", RUN_CONDITIONS, RUN_COMPLETIONS, seed)
        figures["completions.png"] = completions_figure(drawn)
    return figures


def completions_figure(completions, title: str | None = None):
    """A :class:`~pyro_vae.models.base.Completions` as a picture (see
    :func:`completion_figure`)."""
    return completion_figure(completions.task, completions.x, completions.rows, title)
