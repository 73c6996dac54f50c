import numpy as np
import pytest
import torch
from pictures import LEVEL, shown_image

from pyro_vae import plots


def test_image_grid_places_images_row_major_with_padding():
    images = torch.stack([torch.full((6,), v) for v in (0.1, 0.2, 0.3)])  # three 2x3 images
    grid = plots.image_grid(images, (2, 3), ncols=2, pad=1)
    assert grid.shape == (2 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_allclose(grid[0:2, 0:3], 0.1)
    np.testing.assert_allclose(grid[0:2, 4:7], 0.2)
    np.testing.assert_allclose(grid[3:5, 0:3], 0.3)
    np.testing.assert_allclose(grid[3:5, 4:7], 1.0)  # empty cell stays white
    np.testing.assert_allclose(grid[2, :], 1.0)  # padding row


def test_image_grid_clips_to_unit_range():
    grid = plots.image_grid(torch.tensor([[-1.0, 2.0]]), (1, 2))
    assert grid.tolist() == [[0.0, 1.0]]


def test_reconstruction_figure_interleaves_rows(tmp_path):
    x, recon = torch.zeros(8, 4), torch.ones(8, 4)
    fig = plots.reconstruction_figure(x, recon, (2, 2), "t", ncols=4)
    image = fig.axes[0].images[0].get_array()
    # rows of 2-pixel images with 1-pixel padding: input row, reconstruction row, ...
    assert image[0:2, 0:2].max() == 0.0 and image[3:5, 0:2].min() == 1.0
    assert image[6:8, 0:2].max() == 0.0 and image[9:11, 0:2].min() == 1.0
    plots.save_figure(fig, tmp_path / "r.png")
    # the saved picture shows the grid: black inputs, white reconstructions and padding
    shown = shown_image(tmp_path / "r.png", fig)
    assert shown.shape == (11, 11, 3)
    expected = np.ones((11, 11))
    for row in (0, 6):  # the two rows of inputs, 2 pixels high, over the whole width
        expected[row : row + 2, [0, 1, 3, 4, 6, 7, 9, 10]] = 0.0
    np.testing.assert_allclose(shown, np.repeat(expected[..., None], 3, -1), atol=LEVEL)


def _report(target):
    per = {"mean": 0.5, "stderr": 0.1}
    return {
        "target": target,
        "summary": {"elbo": {"mean": -100.0}, "log_px_prior": {"mean": -120.0}},
        "minus_elbo": {"L_10": per, "log_px": {"mean": 2.0, "stderr": 0.2}},
        "ks": [1, 10],
        "num_samples": 100,
        "dataset": "digits",
        "split": "test",
        "num_points": 5,
    }


@pytest.mark.parametrize(
    ("target", "name"),
    [("P(X)", "P(X)"), ("P(Y|X)", "P(Y|X)"), ("Y|X", "P(Y|X)"), ("X", "P(X)"), (None, "P(X)")],
)
def test_bounds_figure_names_the_target_of_the_report(target, name):
    fig = plots.bounds_figure(_report(target))
    ax = fig.axes[0]
    assert f"bounds rise towards log {name}\n" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"log {name}, z from Q (K=100)" in labels
    # the dashed line sits at ELBO + mean gain of the K-sample estimate
    assert ax.lines[-2].get_ydata()[0] == pytest.approx(-98.0)
