import numpy as np
import torch

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
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
