import pytest
import torch

from pyro_vae.errors import UsageError
from pyro_vae.tasks import TASKS, make_task, merge, split


@pytest.mark.parametrize("name", [t for t in TASKS if t != "label"])
def test_masks_cover_every_pixel_exactly_once(name):
    task = make_task(name, (28, 28))
    assert (task.x_mask ^ task.y_mask).all()  # each pixel in X or Y, never both
    assert task.x_dim + task.y_dim == 784


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
