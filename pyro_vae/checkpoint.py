"""Checkpoints: one file holding everything needed to resume or reuse a run.

A checkpoint is a dict saved with :func:`torch.save` and written atomically
(temporary file, then rename), so a crash mid-write leaves the previous one:

``format``, ``config`` (the run's configuration as plain data; its ``"model"``
entry rebuilds the network via :meth:`pyro_vae.vae.VAE.from_config`),
``model_state``, ``optimizer_state``, ``epoch`` (completed epochs),
``history`` and ``rng`` (torch, CUDA, numpy and Python RNG states).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyro_vae.errors import UsageError
from pyro_vae.io import write_atomic

FORMAT = "pyro_vae.checkpoint/1"


def rng_state() -> dict[str, Any]:
    """Snapshot of every RNG a training run draws from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global RNG is what we restore)
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    # RNG states are CPU byte tensors, whatever map_location the checkpoint was read with
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])


def save(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically.

    :param path: destination file.
    :param dict checkpoint: see the module docstring for the keys.
    """
    return write_atomic(path, lambda tmp: torch.save({"format": FORMAT, **checkpoint}, tmp))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.

    :raises UsageError: if the file is missing or is not a pyro_vae checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        # weights_only=False: the file holds numpy and Python RNG states; only
        # load checkpoints you wrote yourself
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a corrupt file
        raise UsageError(f"{path} is not a readable checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{path} is not a pyro_vae checkpoint (expected format {FORMAT})")
    return ckpt


def load_model_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``, or explain exactly how the architectures differ.

    :param module: the freshly built network.
    :param state: a ``state_dict`` from a checkpoint.
    :param str source: where ``state`` came from, for the message.
    :raises UsageError: listing missing, unexpected and mis-shaped parameters.
    """
    own = module.state_dict()
    problems = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems += [f"{k}: missing from checkpoint" for k in own if k not in state]
    problems += [f"{k}: not in this model" for k in state if k not in own]
    if problems:
        shown = "; ".join(problems[:6]) + (
            f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        )
        raise UsageError(
            f"checkpoint {source} was saved from a different architecture: {shown}. "
            "Use the same {z_dim}, {hidden_dims} and {likelihood} as that run, or start a "
            "new run.",
            settings=("z_dim", "hidden_dims", "likelihood"),
        )
    module.load_state_dict(state)
