import pytest
import torch

from pyro_vae.errors import UsageError
from pyro_vae.tasks import TASKS, make_task, merge, split

#: the pixels of X for each task on a 4x6 image, drawn by hand (1 = X, 0 = Y)
HAND_DRAWN_X = {
    "center-column": ["000100", "000100", "000100", "000100"],
    "quadrants-1": ["111000", "111000", "000000", "000000"],
    "quadrants-2": ["111000", "111000", "111000", "111000"],
    "quadrants-3": ["111111", "111111", "111000", "111000"],
}


@pytest.mark.parametrize("name", sorted(HAND_DRAWN_X))
def test_masks_match_the_hand_drawn_layout(name):
    task = make_task(name, (4, 6))
    rows = ["".join(str(int(v)) for v in row) for row in task.x_mask.reshape(4, 6)]
    assert rows == HAND_DRAWN_X[name]
    expected_x = sum(row.count("1") for row in HAND_DRAWN_X[name])
    assert (task.x_dim, task.y_dim) == (expected_x, 24 - expected_x)
    assert torch.equal(task.y_mask, ~task.x_mask)


def test_task_sizes_match_their_definitions():
    assert make_task("center-column", (28, 28)).x_dim == 28  # one column
    assert make_task("quadrants-1", (28, 28)).x_dim == 196
    left = make_task("quadrants-2", (28, 28)).x_mask.reshape(28, 28)
    assert left[:, :14].all() and not left[:, 14:].any()  # the left half
    three = make_task("quadrants-3", (28, 28)).y_mask.reshape(28, 28)
    assert three[14:, 14:].all() and three.sum() == 196  # Y is the bottom-right
    label = make_task("label", (8, 8))
    assert label.x_dim == 10 and label.y_dim == 64


@pytest.mark.parametrize("name", TASKS)
def test_split_then_merge_restores_the_image(name):
    images = torch.rand(5, 64)
    labels = torch.arange(5)
    task = make_task(name, (8, 8))
    x, y = split(task, images, labels)
    assert x.shape == (5, task.x_dim) and y.shape == (5, task.y_dim)
    assert torch.equal(merge(task, x, y), images)
    if name == "label":
        assert torch.equal(x.argmax(-1), labels)


def test_bad_task_input():
    with pytest.raises(UsageError, match="valid names: center-column, quadrants-1"):
        make_task("halves", (28, 28))
    task = make_task("quadrants-1", (8, 8))
    with pytest.raises(UsageError, match="expects flattened images of 64 pixels"):
        split(task, torch.rand(3, 63))
    with pytest.raises(UsageError, match="needs class labels"):
        split(make_task("label", (8, 8)), torch.rand(3, 64))


@pytest.mark.parametrize("name", TASKS)
def test_conditional_data_splits_train_and_test(name):
    from pyro_vae import data as data_mod
    from pyro_vae.tasks import binarize_condition, conditional_data

    dataset = data_mod.load("digits", binarize="dynamic")
    cond = conditional_data(name, dataset)
    (x, y), (xt, yt) = cond.train, cond.test
    assert x.shape == (1438, cond.task.x_dim) and y.shape == (1438, cond.task.y_dim)
    assert xt.shape == (359, cond.task.x_dim) and yt.shape == (359, cond.task.y_dim)
    # training pairs keep the grey levels that each pass binarizes afresh; the test
    # pairs hold one fixed binarization, and X and Y together are the test image
    assert not set(y.unique().tolist()) <= {0.0, 1.0}
    assert set(yt.unique().tolist()) <= {0.0, 1.0} and set(xt.unique().tolist()) <= {0.0, 1.0}
    x_transform, y_transform = cond.transforms
    assert y_transform is data_mod.binarize_batch
    if name == "label":
        assert x_transform is None
        assert torch.equal(xt.argmax(-1), dataset.y_test) and torch.equal(yt, dataset.x_test)
        assert torch.equal(x.argmax(-1), dataset.y_train) and torch.equal(y, dataset.x_train)
    else:
        assert x_transform is (binarize_condition if name == "center-column" else y_transform)
        assert torch.equal(merge(cond.task, xt, yt), dataset.x_test)
        assert torch.equal(merge(cond.task, x, y), dataset.x_train)  # X and Y of one image


def test_centre_column_is_binarized_even_on_grey_data():
    """Doersch feeds the network a binary column: on grey-level data (a Gaussian Y) the
    condition is binarized each pass for training and once, reproducibly, for scoring."""
    from pyro_vae import data as data_mod
    from pyro_vae.tasks import binarize_condition, conditional_data, pairs

    dataset = data_mod.load("digits")
    cond = conditional_data("center-column", dataset)
    xt, yt = cond.test
    assert set(xt.unique().tolist()) <= {0.0, 1.0}
    assert not set(yt.unique().tolist()) <= {0.0, 1.0}  # Y keeps its grey levels
    assert cond.transforms == (binarize_condition, None)
    again, _ = pairs(cond.task, dataset, "test")
    assert torch.equal(again, xt)
    # P(1) = intensity: averaged over the column, the binary mean matches the grey mean
    grey = split(cond.task, dataset.x_test)[0]
    # tolerance: 4 standard errors of a mean of 359 * 8 Bernoulli draws, sd <= 0.5 each
    assert xt.mean().item() == pytest.approx(grey.mean().item(), abs=4 * 0.5 / grey.numel() ** 0.5)


def test_tasks_refuse_data_they_cannot_split():
    from pyro_vae import data as data_mod
    from pyro_vae.tasks import conditional_data

    dataset = data_mod.load("digits")
    flat = data_mod.Dataset("flat", dataset.x_train, dataset.x_test, None, None, None)
    with pytest.raises(UsageError, match="holds no image shape; use an image data set"):
        conditional_data("quadrants-1", flat)
    unlabelled = data_mod.Dataset("u", dataset.x_train, dataset.x_test, None, None, (8, 8))
    with pytest.raises(UsageError, match="the label task needs class labels, and u has none"):
        conditional_data("label", unlabelled)
    half = data_mod.Dataset("h", dataset.x_train, dataset.x_test, dataset.y_train, None, (8, 8))
    with pytest.raises(UsageError, match="has none for its test split"):
        conditional_data("label", half)
    unseen = data_mod.Dataset(
        "s", dataset.x_train, dataset.x_test, dataset.y_train % 9, dataset.y_test, (8, 8)
    )
    with pytest.raises(UsageError, match="the test split has class 9, which no training image"):
        conditional_data("label", unseen)
    with pytest.raises(UsageError, match="unknown task 'halves'"):
        conditional_data("halves", dataset)


def test_centre_column_on_dequantized_data_is_scored_like_it_is_trained():
    """Scoring maps the dequantized test pixel (k + u) / levels back to k / (levels - 1),
    the grey level that training binarizes, before the fixed binarization."""
    from pyro_vae import data as data_mod
    from pyro_vae.tasks import CONDITION_SEED, pairs

    grey = data_mod.load("digits")
    dq = data_mod.load("digits", dequantize=True)
    task = make_task("center-column", (8, 8))
    expected = data_mod.binarize_fixed(split(task, grey.x_test)[0], seed=CONDITION_SEED)
    assert torch.equal(pairs(task, dq, "test")[0], expected)
