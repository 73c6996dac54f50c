"""Training curves and pictures for TensorBoard: ``pyro-vae train --tensorboard [DIR]``.

After every epoch :class:`TensorBoard` writes, at step = the epoch number, the scalars
of the run's history (``train/objective``, ``test/elbo``, ``train/kl_weight``,
``train/lr``, ``train/seconds``) and, for a model of images, a grid of prior samples
and one of test images above their reconstructions. The pictures are drawn on random
streams of their own, so a run trains to the same numbers with and without it. A resumed
run continues the same curves: the first epoch it writes purges any later step that an
interrupted run left behind. Under ``torchrun`` only rank 0 writes.

``tensorboard`` is an optional extra (``pip install 'pyro-vae[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pyro_vae import distributed, plots
from pyro_vae.errors import UsageError

#: the pip extra that installs TensorBoard
EXTRA = "tensorboard"
#: the event folder inside the run folder when ``--tensorboard`` names none
FOLDER = "tensorboard"
#: ``pyro-vae train --help`` for ``--tensorboard``
HELP = (
    "write each epoch's scalars and pictures for TensorBoard to DIR (default "
    f"RUN/{FOLDER}); needs the extra: pip install 'pyro-vae[{EXTRA}]'"
)
#: samples, and test images with their reconstructions, in the pictures
SAMPLES, RECONSTRUCTIONS = 32, 16


def summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``.

    :raises UsageError: when the ``tensorboard`` package is not installed, naming the extra.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "{tensorboard} needs the tensorboard package: pip install "
            f"'pyro-vae[{EXTRA}]' (or pip install tensorboard)",
            settings=("tensorboard",),
        ) from None
    return SummaryWriter


def for_run(given: str | bool | None, run_folder: Path, model, dataset, train_config):
    """The :class:`TensorBoard` that ``--tensorboard [DIR]`` asks for (``None`` when it is
    not given, or on a rank other than 0): DIR, or ``RUN/tensorboard`` for ``True`` (the
    flag without a folder)."""
    if given is None or not distributed.is_main():
        return None
    folder = Path(run_folder) / FOLDER if given is True else Path(given)
    return TensorBoard(folder, model, dataset, train_config)


class TensorBoard:
    """Writes one step per epoch; pass :meth:`epoch` as ``fit(..., on_epoch=...)``.

    :param folder: the event folder.
    :param model: the :class:`~pyro_vae.models.base.Model` being trained.
    :param dataset: its :class:`~pyro_vae.data.Dataset`, for the test images.
    :param train_config: its :class:`~pyro_vae.train_config.TrainConfig` (the learning
        rate of each epoch).
    """

    def __init__(self, folder: str | Path, model, dataset, train_config) -> None:
        self.folder = Path(folder)
        self.model, self.dataset, self.config = model, dataset, train_config
        self.writer: Any = None
        self._writer_class = summary_writer()  # refused before training, not after it

    def epoch(self, history) -> None:
        """Write the scalars and pictures of the epoch ``history`` ends with."""
        if not distributed.is_main():
            return
        step = history.epoch[-1]
        if self.writer is None:  # drop what an interrupted run wrote from this step on
            self.writer = self._writer_class(log_dir=str(self.folder), purge_step=step)
        w = self.writer
        w.add_scalar("train/objective", history.train_objective[-1], step)
        w.add_scalar("test/elbo", history.test_elbo[-1], step)
        w.add_scalar("train/kl_weight", history.kl_weight[-1], step)
        w.add_scalar("train/lr", self.config.lr_at(step - 1), step)
        w.add_scalar("train/seconds", history.seconds[-1], step)
        for tag, grid in self._pictures().items():
            w.add_image(tag, grid.unsqueeze(0), step, dataformats="CHW")
        w.flush()

    @torch.no_grad()
    def _pictures(self) -> dict[str, torch.Tensor]:
        model, shape = self.model, self.model.image_shape
        if shape is None:
            return {}
        x = self.dataset.x_test
        pictures = {}
        devices = distributed.rng_devices(x)
        with torch.random.fork_rng(devices=devices):  # the training stream is untouched
            if model.supports("sample"):
                generator = torch.Generator(device=x.device).manual_seed(0)
                drawn = model.sample(SAMPLES, generator=generator)
                pictures["samples"] = _grid(drawn, shape, model.sample_columns)
            if model.supports("reconstruct"):
                from pyro_vae.splits import spread_subset

                images = x[spread_subset(len(x), RECONSTRUCTIONS).to(x.device)]
                both = torch.cat([images, model.reconstruct(images)])
                pictures["reconstructions"] = _grid(both, shape, RECONSTRUCTIONS // 2)
        return pictures

    def close(self) -> None:
        """Flush and close the event file, if one was opened."""
        if self.writer is not None:
            self.writer.close()


def _grid(images: torch.Tensor, shape, columns: int | None) -> torch.Tensor:
    grid = plots.image_grid(images.detach().float().cpu(), shape, columns)
    return torch.as_tensor(grid, dtype=torch.float32).clamp(0, 1)
