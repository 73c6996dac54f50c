import struct

import numpy as np
import pytest
import torch

from pyro_vae import data
from pyro_vae.errors import UsageError


def test_mnist5k_split_is_fixed_stratified_and_scaled():
    d = data.load("mnist5k")
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert d.image_shape == (28, 28)
    assert d.x_train.dtype == torch.float32
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    # 500 images per class in the file: exactly 100 per class in test
    assert d.y_test.bincount().tolist() == [100] * 10
    assert d.y_train.bincount().tolist() == [400] * 10
    again = data.load("mnist5k")
    assert torch.equal(d.x_test, again.x_test)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.3, 0.5, 0.7])
def test_stratified_split_sizes_are_exact_for_many_sizes(fraction):
    from fractions import Fraction

    for n in range(1, 200):
        labels = np.arange(n) % 3
        train, test = data.stratified_split(labels, fraction)
        assert len(test) == int(Fraction(str(fraction)) * n), (n, fraction)
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == n
    with pytest.raises(ValueError, match="test_fraction"):
        data.stratified_split(np.zeros(4), 1.5)


def test_stratified_split_keeps_class_shares_within_one():
    labels = np.repeat(np.arange(3), [7, 11, 13])  # 31 points, uneven classes
    train, test = data.stratified_split(labels, 0.2, seed=3)
    assert len(test) == 6 and len(train) == 25  # floor(31 * 0.2)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(31))
    for c, n in enumerate([7, 11, 13]):
        assert abs((labels[test] == c).sum() - 0.2 * n) <= 1


def test_digits_are_8x8_in_unit_range():
    d = data.load("digits")
    assert d.x_train.shape[1] == 64 and d.image_shape == (8, 8)
    assert len(d.x_train) + len(d.x_test) == 1797
    assert float(d.x_train.max()) == 1.0


def test_static_binarization_is_seeded_and_binary():
    a, b = data.load("digits", binarize="static"), data.load("digits", binarize="static")
    assert set(a.x_train.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)


def test_dynamic_binarization_keeps_train_grey_and_fixes_test():
    grey = data.load("digits")
    d = data.load("digits", binarize="dynamic")
    assert torch.equal(d.x_train, grey.x_train)
    assert set(d.x_test.unique().tolist()) == {0.0, 1.0}
    # a fresh sample per call, with P(1) equal to the grey level
    torch.manual_seed(0)
    x = torch.full((20000,), 0.3)
    assert abs(data.binarize_batch(x).mean().item() - 0.3) < 0.01  # 0.01 ~ 3 std errors


def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for n in array.shape:
            f.write(struct.pack(">I", n))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_sets_read_from_existing_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), 2049)
    d = data.load(name, data_dir=tmp_path, download=False)
    assert d.x_train.shape == (12, 784) and d.x_test.shape == (5, 784)
    rng = np.random.default_rng(0)  # the same draws as written above
    images, labels = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, (12,))
    np.testing.assert_allclose(d.x_train.numpy(), images.reshape(12, -1) / 255.0, rtol=1e-6)
    assert d.y_train.tolist() == labels.tolist()


def test_torchvision_missing_files_give_usage_error(tmp_path):
    with pytest.raises(UsageError, match="could not read or download"):
        data.load("mnist", data_dir=tmp_path, download=False)


def test_npz_uint8_images(tmp_path):
    path = tmp_path / "mine.npz"
    x = np.arange(3 * 4 * 5).reshape(3, 4, 5).astype(np.uint8)
    np.savez(path, x_train=x, x_test=x[:1], y_train=np.array([0, 1, 2]))
    d = data.load(f"npz:{path}")
    assert d.image_shape == (4, 5)
    assert d.x_train.shape == (3, 20)
    assert d.x_train[0, 1].item() == pytest.approx(1 / 255)
    assert d.y_train.tolist() == [0, 1, 2] and d.y_test is None


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"x_train": np.zeros((3, 4))}, "missing array"),
        ({"x_train": np.full((3, 4), np.nan), "x_test": np.zeros((1, 4))}, "NaN or infinite"),
        ({"x_train": np.zeros((0, 4)), "x_test": np.zeros((1, 4))}, "train split is empty"),
        ({"x_train": np.full((3, 4), 2.0), "x_test": np.zeros((1, 4))}, r"outside \[0, 1\]"),
        ({"x_train": np.zeros((3, 4)), "x_test": np.zeros((1, 5))}, "features per point"),
        ({"x_train": np.full((3, 4), 300), "x_test": np.zeros((1, 4))}, "0..255"),
        ({"x_train": np.array([["a"]]), "x_test": np.zeros((1, 1))}, "use floats or uint8"),
        (
            {"x_train": np.zeros((3, 4)), "x_test": np.zeros((1, 4)), "y_train": np.zeros(2, int)},
            "must be 3 integer labels",
        ),
    ],
)
def test_npz_bad_input(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=message):
        data.load(f"npz:{path}")


def test_corrupt_npz_is_a_usage_error(tmp_path):
    import gc

    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((3, 4)), x_test=np.zeros((1, 4)))
    path.write_bytes(path.read_bytes()[:50])  # truncated
    # numpy.load leaves the file of a zip it cannot read open; the file is closed, with a
    # ResourceWarning, once the error that refers to numpy's frame is gone
    with pytest.warns(ResourceWarning, match=r"unclosed file .*bad\.npz"):
        with pytest.raises(UsageError, match=r"not a readable \.npz file"):
            data.load(f"npz:{path}")
        gc.collect()


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(UsageError, match="valid names: mnist5k, digits"):
        data.load("cifar")
    with pytest.raises(UsageError, match="valid modes: none, static, dynamic"):
        data.load("digits", binarize="sometimes")
    with pytest.raises(UsageError, match="no such file"):
        data.load(f"npz:{tmp_path / 'absent.npz'}")
