"""Checkpoints: one file holding everything needed to resume or reuse a run.

A checkpoint is a dict of:

``format``, ``config`` (the run's configuration as plain data; its ``"model"``
entry rebuilds the network via :meth:`pyro_vae.vae.VAE.from_config`),
``model_state``, ``optimizer_state``, ``epoch`` (completed epochs),
``history`` and ``rng`` (torch, CUDA, numpy and Python RNG states).

:func:`save` serializes it with :func:`torch.save` and stores those bytes with their
SHA-256 checksum (``{"format", "sha256", "payload"}``, format ``pyro_vae.checkpoint/2``),
written atomically and flushed to the disk (temporary file, then rename), so a crash
mid-write leaves the previous checkpoint; it never writes non-finite weights. :func:`load`
trusts nothing it reads: a checksum that does not match, weights that are not finite and
every field of the wrong type are refused with one line naming the file and the field.
Checkpoints of format ``pyro_vae.checkpoint/1`` (written before checksums, a bare dict)
are still read, with every other check.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyro_vae import schema
from pyro_vae.errors import UsageError, WriteFailed
from pyro_vae.io import write_bytes

FORMAT = "pyro_vae.checkpoint/2"
#: the format before checksums: a bare dict, read as it is
FORMAT_1 = "pyro_vae.checkpoint/1"
#: what to do with a checkpoint that cannot be used
REMEDY = schema.REMEDY


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


def nonfinite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in a ``state_dict`` that hold NaN or infinite
    values."""
    return [
        name
        for name, t in state.items()
        if isinstance(t, torch.Tensor)
        and (t.is_floating_point() or t.is_complex())
        and not bool(torch.isfinite(t).all())
    ]


def save(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically, with the checksum of its bytes.

    :param path: destination file.
    :param dict checkpoint: see the module docstring for the keys.
    :raises UsageError: if ``model_state`` holds NaN or infinite values (nothing is
        written: the previous checkpoint stays the last good one).
    :raises WriteFailed: if the file cannot be written (a full disk); the previous
        checkpoint is left as it was and no temporary file remains.
    """
    path = Path(path)
    bad = nonfinite(checkpoint.get("model_state", {}))
    if bad:
        raise UsageError(
            f"refusing to write {path}: the model's {bad[0]} holds NaN or infinite values "
            f"({len(bad)} tensor(s) in all); the previous checkpoint is kept"
        )
    buffer = io.BytesIO()
    torch.save({**checkpoint, "format": FORMAT}, buffer)
    payload = buffer.getvalue()
    sealed = io.BytesIO()
    torch.save(
        {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload},
        sealed,
        pickle_protocol=4,  # stores the bytes as they are (protocol 2 re-encodes them)
    )
    existed = path.is_file()
    try:
        return write_bytes(path, sealed.getvalue())
    except OSError as err:
        raise _write_failed(path, err, existed) from err


def _write_failed(path: Path, err: OSError, existed: bool) -> WriteFailed:
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    cause = "the disk is full" if err.errno == errno.ENOSPC else err.strerror or str(err)
    kept = "the previous checkpoint is kept as it was" if existed else "no checkpoint was written"
    fix = "free some space" if full else "fix the cause"
    then = "continue the run with {resume}" if existed else "train the run again"
    failed = WriteFailed(
        f"could not write the checkpoint {path}: {cause}; {kept}. {fix.capitalize()}, then {then}",
        settings=("resume",),
    )
    failed.errno = err.errno
    return failed


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save`.

    :raises UsageError: if the file is missing, is not a pyro_vae checkpoint, does not
        match its checksum (it was damaged after it was written), holds non-finite
        weights, or holds a field of the wrong type; each names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    outer = _torch_load(path, path, map_location)
    fmt = outer.get("format") if isinstance(outer, dict) else None
    if fmt == FORMAT:
        ckpt = _unsealed(outer, path, map_location)
    elif fmt == FORMAT_1:
        ckpt = outer
    elif isinstance(fmt, str) and fmt.startswith("pyro_vae.checkpoint/"):
        raise UsageError(
            f"{path} was written in format {fmt!r}, which this version of pyro_vae cannot "
            "read; upgrade pyro_vae"
        )
    else:
        raise UsageError(f"{path} is not a pyro_vae checkpoint (expected format {FORMAT})")
    check(ckpt, path)
    return ckpt


def _torch_load(source, path: Path, map_location) -> Any:
    try:
        # weights_only=False: the file holds numpy and Python RNG states; only
        # load checkpoints you wrote yourself
        return torch.load(source, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a corrupt file
        raise UsageError(f"{path} is not a readable checkpoint ({err}); {REMEDY}") from err


def _unsealed(outer: dict[str, Any], path: Path, map_location) -> dict[str, Any]:
    """The checkpoint inside a sealed file, once its bytes match their checksum."""
    digest, payload = outer.get("sha256"), outer.get("payload")
    if not isinstance(digest, str) or not isinstance(payload, bytes):
        raise UsageError(f"{path} is damaged: it has no checksum or no contents; {REMEDY}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise UsageError(
            f"{path} is damaged: its contents do not match the SHA-256 checksum written "
            f"with them (a disk or copy error changed the file); {REMEDY}"
        )
    ckpt = _torch_load(io.BytesIO(payload), path, map_location)
    if not isinstance(ckpt, dict):
        raise UsageError(f"{path} is not a pyro_vae checkpoint (it holds no dict)")
    return ckpt


def check(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Check every field of a checkpoint read from ``path`` before anything uses it.

    :raises UsageError: naming the file and the first field that is missing, of the wrong
        type or out of range, or the parameter that holds NaN or infinite values.
    """

    def refuse(problem: str) -> UsageError:
        return UsageError(f"{path} is not a usable checkpoint: {problem}; {REMEDY}")

    for key in ("config", "model_state", "optimizer_state", "history", "rng"):
        if not isinstance(ckpt.get(key), dict):
            shown = "missing" if key not in ckpt else schema.described(ckpt[key])
            raise refuse(f"its {key} is {shown}, not a dict")
    epoch = ckpt.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise refuse(f"its epoch is {schema.described(epoch)}, not a count of epochs (>= 0)")
    state = ckpt["model_state"]
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise refuse(f"model_state entry {name!r} is {schema.described(value)}, not a tensor")
    bad = nonfinite(state)
    if bad:
        raise UsageError(
            f"{path} holds unusable weights: the model's {bad[0]} has NaN or infinite values "
            f"({len(bad)} tensor(s) in all); {REMEDY}"
        )
    _check_config(ckpt["config"], path)
    _check_history(ckpt["history"], epoch, refuse)
    _check_rng(ckpt["rng"], refuse, "rng")
    if "distributed" in ckpt:
        saved = ckpt["distributed"]
        if not isinstance(saved, dict) or not isinstance(saved.get("order"), torch.Tensor):
            raise refuse("its distributed entry holds no data order")
        ranks, streams = saved.get("world_size"), saved.get("rng")
        if not isinstance(ranks, int) or ranks < 1 or not isinstance(streams, list | tuple):
            raise refuse("its distributed entry holds no number of processes or no streams")
        if len(streams) != ranks:
            raise refuse(f"its distributed entry holds {len(streams)} streams for {ranks} ranks")
        for i, stream in enumerate(streams):
            _check_rng(stream, refuse, f"distributed.rng[{i}]")


def _check_config(config: dict[str, Any], path) -> None:
    """The blocks every checkpoint's ``config`` holds; their fields are checked where
    they are used (:class:`~pyro_vae.run.RunConfig`, resuming in :func:`pyro_vae.fit`)."""
    model = schema.mapping(config.get("model"), f"{path}: config.model")
    schema.check_type(model.get("kind", ""), "str", f"{path}: config.model.kind")
    schema.mapping(config.get("train"), f"{path}: config.train")


def _check_history(history: dict[str, Any], epoch: int, refuse) -> None:
    for name, values in history.items():
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise refuse(f"its history.{name} is not a list of numbers")
        if len(values) != epoch:
            raise refuse(f"its history.{name} records {len(values)} epochs, its epoch is {epoch}")


def _check_rng(state: Any, refuse, where: str) -> None:
    ok = (
        isinstance(state, dict)
        and isinstance(state.get("torch"), torch.Tensor)
        and state["torch"].dtype == torch.uint8
        and isinstance(state.get("numpy"), tuple | list)
        and isinstance(state.get("python"), tuple | list)
        and (state.get("cuda") is None or isinstance(state["cuda"], list | tuple))
    )
    if not ok:
        raise refuse(f"its {where} is not a set of random number generator states")


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
