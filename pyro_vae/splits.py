"""How the splits of a data set are presented to a model: the per-batch transform of
training, the fixed tensors a split is scored on, and evenly spaced subsets."""

from __future__ import annotations

import torch

from pyro_vae import data as data_mod
from pyro_vae.errors import UsageError

SPLITS = ("test", "train")


def batch_transform(dataset: data_mod.Dataset):
    """The per-batch transform training needs for ``dataset``: a fresh Bernoulli sample
    (dynamic binarization), fresh dequantization noise, or nothing."""
    if dataset.binarize == "dynamic":
        return data_mod.binarize_batch
    if dataset.dequantized:
        levels = dataset.levels
        return lambda x: data_mod.dequantize(x, levels)
    return None


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
