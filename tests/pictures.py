"""What a written figure shows, read back from its PNG file.

Not a test module (no ``test_`` prefix): the tests of commands that draw import it.
A PNG is compared with the same figure rendered here from tensors the test knows
(:func:`assert_axes_match`), or its panels are found and read from the pixels
(:func:`completion_panels`), so that a command that draws the wrong thing (noise, the
wrong number of panels, a blank canvas) fails, not only one that writes no file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the resolution of :func:`pyro_vae.plots.save_figure`
DPI = 120
#: one step of an 8-bit colour channel: how far a pixel read back may be from the value
#: drawn (matplotlib rounds each channel to 8 bits)
LEVEL = 1 / 255


def read_rgb(path: str | Path) -> np.ndarray:
    """The picture in a PNG file as ``(height, width, 3)`` floats in ``[0, 1]``."""
    import matplotlib.image as mpimg

    path = Path(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    if image.shape[2] == 4:  # savefig writes an opaque canvas
        assert image[..., 3].min() == 1.0, f"{path} has transparent pixels"
    return image[..., :3].astype(np.float64)


def render(fig, tmp_path: Path, name: str = "expected.png") -> np.ndarray:
    """``fig`` saved as the commands save figures, then read back (see :func:`read_rgb`)."""
    from pyro_vae.plots import save_figure

    path = Path(tmp_path) / name
    save_figure(fig, path)
    return read_rgb(path)


def axes_boxes(fig) -> list[tuple[slice, slice]]:
    """Pixel rows and columns of every axes of ``fig`` as saved at :data:`DPI` (titles,
    tick labels and other text outside the axes left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    height = fig.canvas.get_width_height()[1]
    boxes = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        # display coordinates start at the bottom left, pixel rows at the top; one
        # pixel inside the box, whose edges are antialiased against the background
        top, bottom = int(np.ceil(height - box.y1)) + 1, int(np.floor(height - box.y0)) - 1
        left, right = int(np.ceil(box.x0)) + 1, int(np.floor(box.x1)) - 1
        boxes.append((slice(top, bottom), slice(left, right)))
    return boxes


def assert_axes_match(path: str | Path, fig, tmp_path: Path, atol: float = LEVEL) -> None:
    """The PNG at ``path`` shows what ``fig`` draws inside every one of its axes.

    ``fig`` is rendered from known data with the plotting function the command uses;
    the two pictures must have one size and, inside each axes, the same pixels
    (within ``atol``).
    Text outside the axes (titles) is not compared, so that a reworded title does not
    fail a test of what the figure shows.
    """
    got = read_rgb(path)
    boxes = axes_boxes(fig)
    expected = render(fig, tmp_path)
    assert got.shape == expected.shape, f"{path}: {got.shape}, expected {expected.shape}"
    assert boxes, "the expected figure has no axes"
    for i, (rows, cols) in enumerate(boxes):
        diff = np.abs(got[rows, cols] - expected[rows, cols])
        share = float((diff > atol).any(-1).mean())
        assert share == 0.0, (
            f"{path}: axes {i} differs from the expected figure in {share:.1%} of its "
            f"pixels (largest difference {diff.max():.3f})"
        )


def assert_not_blank(path: str | Path, min_ink: float = 0.02) -> np.ndarray:
    """The PNG at ``path`` shows something: at least ``min_ink`` of its pixels are not
    the white background, and it holds dark pixels (text, axes) and more than a few
    colours. Returns the picture."""
    image = read_rgb(path)
    ink = float((image < 0.95).any(-1).mean())
    assert ink >= min_ink, f"{path} is {1 - ink:.1%} white: nothing drawn"
    assert (image.max(-1) < 0.3).any(), f"{path} has no dark pixels (no text, no axes)"
    colours = np.unique((image * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 8, f"{path} holds only {len(colours)} colours"
    return image


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of every run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def blue(image: np.ndarray) -> np.ndarray:
    """Pixels of the tint of the condition X in completion figures
    (:data:`pyro_vae.plots.CONDITION_TINT`): blue well above red. The grey pixels of Y,
    black text and white background have equal channels."""
    return image[..., 2] - image[..., 0] > 0.2


def completion_panels(path: str | Path, task) -> np.ndarray:
    """The images shown in a completion figure (``pyro-vae complete``), read back.

    Every panel shows one image whose condition pixels are tinted blue; the panels are
    found from the blue pixels, and each pixel of the image is read at the centre of
    its square on the canvas.

    :param task: the :class:`pyro_vae.tasks.Task` drawn, one whose condition is pixels
        (not the label task); the blue pixels of a panel span the rows and columns of
        the condition's bounding box.
    :returns: ``(rows, columns, height, width, 3)``: a row per drawn row (ground truth,
        completions), a column per condition.
    """
    image = read_rgb(path)
    h, w = task.image_shape
    mask = task.x_mask.reshape(h, w).numpy()
    r_idx, c_idx = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, c0 = int(r_idx[0]), int(c_idx[0])
    x_rows, x_cols = int(r_idx[-1]) - r0 + 1, int(c_idx[-1]) - c0 + 1
    tinted = blue(image)
    row_runs, col_runs = runs(tinted.any(1)), runs(tinted.any(0))
    panels = np.zeros((len(row_runs), len(col_runs), h, w, 3))
    for i, (top, bottom) in enumerate(row_runs):
        for j, (left, right) in enumerate(col_runs):
            cell_h, cell_w = (bottom - top) / x_rows, (right - left) / x_cols
            ys = (top + (np.arange(h) - r0 + 0.5) * cell_h).astype(int)
            xs = (left + (np.arange(w) - c0 + 0.5) * cell_w).astype(int)
            panels[i, j] = image[np.ix_(ys, xs)]
    return panels


def assert_layout(path: str | Path, layout, tmp_path: Path, min_drawn: float = 0.1) -> None:
    """The PNG at ``path`` has the layout of the figure ``layout`` and something drawn in
    every one of its axes.

    ``layout`` is the figure the command draws, made by the same plotting function from
    placeholder data of the right shape (images of uniform grey, say): the picture must
    have its size in pixels (which follows the number of rows and columns of panels),
    and inside each of its axes at least ``min_drawn`` of the pixels must differ from
    the placeholder's. Use it where the data drawn are not at hand (the models of an
    experiment are not saved).
    """
    got = assert_not_blank(path)
    boxes = axes_boxes(layout)
    blank = render(layout, tmp_path, "layout.png")
    assert got.shape == blank.shape, f"{path}: {got.shape}, layout {blank.shape}"
    for i, (rows, cols) in enumerate(boxes):
        drawn = float((np.abs(got[rows, cols] - blank[rows, cols]) > 4 * LEVEL).any(-1).mean())
        assert drawn >= min_drawn, f"{path}: axes {i} shows {drawn:.1%} besides the layout"


def grey(rows: int, pixels: int = 784):
    """``rows`` placeholder images of uniform grey, for :func:`assert_layout`."""
    import torch

    return torch.full((rows, pixels), 0.5)


def shown_image(path: str | Path, fig, axes: int = 0) -> np.ndarray:
    """The image that axes ``axes`` of ``fig`` draws, as the PNG at ``path`` shows it:
    the colour at the centre of every data pixel, ``(height, width, 3)``.

    ``fig`` tells where the image lies on the canvas (it must be laid out as the PNG
    was: the same figure, or one drawn by the same function from data of the same
    shape); the colours are read from the PNG alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    got = read_rgb(path)
    FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    height = fig.canvas.get_width_height()[1]
    assert got.shape[0] == height, (got.shape, height)
    image = fig.axes[axes].images[0]
    box = image.get_window_extent()
    rows, cols = np.asarray(image.get_array()).shape[:2]
    ys = (height - box.y1 + (np.arange(rows) + 0.5) * box.height / rows).astype(int)
    xs = (box.x0 + (np.arange(cols) + 0.5) * box.width / cols).astype(int)
    return got[np.ix_(ys, xs)]
