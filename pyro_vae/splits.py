"""Run folders: the device, the trained model and the data a run was made with."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from pyro_vae import checkpoint as ckpt_io
from pyro_vae import data as data_mod
from pyro_vae.cvae import CVAE, Regressor
from pyro_vae.errors import UsageError
from pyro_vae.vae import VAE

SPLITS = ("test", "train")


def resolve_device(name: str) -> torch.device:
    """Parse a ``--device`` value.

    :raises UsageError: if it names no usable device.
    """
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"unknown device {name!r} ({err}); use cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda: CUDA is not available on this machine; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    return device


#: model classes by the ``"kind"`` of their ``config()``
MODELS = {"vae": VAE, "cvae": CVAE, "regressor": Regressor}


def load_run(run: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained model of a run folder (or of a folder holding a ``fit`` checkpoint).

    :returns: ``(model, checkpoint_dict)``, the :class:`~pyro_vae.vae.VAE`,
        :class:`~pyro_vae.cvae.CVAE` or :class:`~pyro_vae.cvae.Regressor` that the
        config's ``"kind"`` names, in eval mode on ``device``.
    :raises UsageError: if the folder holds no readable checkpoint with a model config.
    """
    path = Path(run) / "checkpoint.pt"
    state = ckpt_io.load(path)
    if "model" not in state["config"]:
        raise UsageError(f"{path} holds no model configuration; it was not written by pyro_vae.fit")
    config = copy.deepcopy(state["config"]["model"])
    kind = config.get("kind", "vae")
    if kind not in MODELS:
        raise UsageError(
            f"{path} holds a model of kind {kind!r}, which this version of pyro_vae does not "
            f"know ({', '.join(MODELS)}); upgrade pyro_vae"
        )
    model = MODELS[kind].from_config(config)
    ckpt_io.load_model_state(model, state["model_state"], str(run))
    return model.to(device).eval(), state


def run_dataset(config: dict[str, Any], source: str) -> data_mod.Dataset:
    """Load the data set a run was trained on, as its ``config["data"]`` describes.

    :param config: the run's configuration (``config.json`` or the checkpoint's).
    :param str source: where the config came from, for the message.
    :raises UsageError: if the config names no data set.
    """
    if "data" not in config:
        raise UsageError(
            f"{source} records no data set (a checkpoint of fit() called from Python); "
            "evaluate it from Python with pyro_vae.evaluate"
        )
    d = config["data"]
    return data_mod.load(
        d["dataset"],
        binarize=d["binarize"],
        dequantize=d.get("dequantize", False),
        data_dir=d.get("data_dir", "data"),
    )


def batch_transform(dataset: data_mod.Dataset):
    """The per-batch transform training needs for ``dataset``: a fresh Bernoulli sample
    (dynamic binarization), fresh dequantization noise, or nothing."""
    if dataset.binarize == "dynamic":
        return data_mod.binarize_batch
    if dataset.dequantized:
        levels = dataset.levels
        return lambda x: data_mod.dequantize(x, levels)
    return None


def comparable_bits_per_dim(vae, dataset: data_mod.Dataset, log_p):
    """``log_p`` (nats per image) in bits per dimension, or ``None`` where not comparable.

    Discrete likelihoods count directly (Bernoulli of binarized images: bits of the
    binarized data); continuous densities only on dequantized data. For a
    conditional model the dimensions are those of Y.
    """
    from pyro_vae.units import bits_per_dim

    return bits_per_dim(
        log_p,
        getattr(vae, "y_dim", vae.x_dim),  # conditional models score Y only
        discrete=vae.likelihood.discrete,
        levels=dataset.levels,
        dequantized=dataset.dequantized,
    )


def evaluation_split(dataset: data_mod.Dataset, split: str) -> torch.Tensor:
    """The images of ``split`` as the model is scored on them.

    Under dynamic binarization (or dequantization) the test split already holds one
    fixed sample; the training split gets one too, so scores repeat.

    :param str split: ``"test"`` or ``"train"``.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if split == "test":
        return dataset.x_test
    if dataset.binarize == "dynamic":
        return data_mod.binarize_fixed(dataset.x_train, seed=data_mod.BINARIZE_SEED + 1)
    if dataset.dequantized:  # one fixed dequantization of the training images
        gen = torch.Generator(device=dataset.x_train.device).manual_seed(
            data_mod.DEQUANTIZE_SEED + 1
        )
        return data_mod.dequantize(dataset.x_train, dataset.levels, gen)
    return dataset.x_train


def spread_subset(n_total: int, n: int | None) -> torch.Tensor:
    """``n`` evenly spaced indices into ``range(n_total)`` (all of them for ``None``).

    Splits keep their source's order, often grouped by class, so an evenly spaced
    subset keeps the classes balanced where a prefix would not.
    """
    if n is None or n >= n_total:
        return torch.arange(n_total)
    if n < 1:
        raise UsageError(f"a subset needs at least 1 point, got {n}")
    return torch.linspace(0, n_total - 1, n).round().long()
