"""Doersch figure 3: squared pixel distance rewards the wrong digits.

With a Gaussian P(X|z) = N(f(z), sigma^2 I), ``-log P(X|z)`` is the squared distance
``||X - f(z)||^2 / (2 sigma^2)`` plus a constant. The tutorial compares a digit X with
(b) X with part of its stroke erased, no longer the same digit, and (c) X shifted down
and right by half a pixel, a perfectly good rendering of it: (b) is the closer of the
two. To keep digits like (b) out of ``P(X) ~ (1/n) sum_i P(X|z_i)``, sigma must be so
small that only near-copies of X count, and almost no sample from the prior is one.

For every test digit of mnist5k (grey levels in [0, 1]) this measures ``||X - b||^2``
(``b``: the bottom ERASE_ROWS rows of ink erased) and ``||X - c||^2`` (``c``: bilinear
half-pixel shift, ``c[i, j]`` the mean of ``X[i, j]``, ``X[i-1, j]``, ``X[i, j-1]``,
``X[i-1, j-1]``). It then sets sigma so that (b) is rejected, its likelihood ratio to a
perfect match ``exp(-||X - b||^2 / (2 sigma^2)) = exp(-REJECT_NATS)``, and treats the
4,000 training digits as samples of a perfect generator: how many of them are closer
to X than (b), and the effective sample size of their weights ``P(X|x_i)``.

Usage: ``python experiments/pixel_distance.py [--quick] [--out results/pixel_distance]``
"""

from __future__ import annotations

import sys

import common
import torch

from pyro_vae import data as data_mod
from pyro_vae.evaluate import mean_and_stderr
from pyro_vae.splits import spread_subset
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Figure 3: squared pixel distance"
PAGE = "pixel_distance.md"
MINUTES = 0.2
ORDER = 2

#: rows of ink erased from the bottom of each digit for the "bad sample" (b)
ERASE_ROWS = 3
#: the sweep over how much is erased
ERASE_SWEEP = (1, 2, 3, 4, 5)
#: sigma is set so that (b) counts exp(-REJECT_NATS) as much as an exact copy of X
REJECT_NATS = 5.0
INK = 0.1  # a pixel brighter than this is ink


def shift_half_pixel(images: torch.Tensor) -> torch.Tensor:
    """Shift ``(N, H, W)`` images down and right by half a pixel (bilinear, zero border)."""
    padded = torch.nn.functional.pad(images, (1, 0, 1, 0))
    return (padded[:, 1:, 1:] + padded[:, :-1, 1:] + padded[:, 1:, :-1] + padded[:, :-1, :-1]) / 4


def erase_bottom(images: torch.Tensor, rows: int = ERASE_ROWS) -> torch.Tensor:
    """``(N, H, W)`` images with their lowest ``rows`` rows that hold ink set to zero."""
    out = images.clone()
    has_ink = (images > INK).any(-1)  # (N, H)
    height = images.shape[1]
    last = height - 1 - has_ink.flip(-1).float().argmax(-1)  # lowest row with ink
    row = torch.arange(height)
    erase = (row >= (last - rows + 1).unsqueeze(-1)) & (row <= last.unsqueeze(-1))
    out[erase] = 0
    return out


def sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance per image over all pixels."""
    return ((a - b) ** 2).flatten(1).sum(-1)


def main(argv=None) -> dict:
    """Measure the distances; returns the results written to ``results.json``."""
    args = common.parser("pixel_distance", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    dataset = data_mod.load("mnist5k")
    h, w = dataset.image_shape
    idx = spread_subset(len(dataset.x_test), budget.test_images)
    x = dataset.x_test[idx].reshape(-1, h, w)
    labels = dataset.y_test[idx]
    erased, shifted = erase_bottom(x), shift_half_pixel(x)
    d_erased, d_shifted = sq_distance(x, erased), sq_distance(x, shifted)

    # sigma per digit rejecting (b) by exp(-REJECT_NATS): d_b / (2 sigma^2) = REJECT_NATS
    sigma2 = d_erased / (2 * REJECT_NATS)
    train = dataset.x_train
    d_train = torch.cdist(x.flatten(1), train).pow(2)  # (N, 4000) squared distances
    closer = (d_train < d_erased.unsqueeze(-1)).sum(-1)
    log_w = -d_train / (2 * sigma2.unsqueeze(-1))
    weights = torch.softmax(log_w, -1)
    ess = 1 / (weights**2).sum(-1)
    same_class = dataset.y_train.unsqueeze(0) == labels.unsqueeze(-1)
    nearest_same = torch.where(same_class, d_train, torch.inf).min(-1).values
    # what the shifted digit's likelihood ratio to an exact copy is at that sigma
    shifted_nats = d_shifted / (2 * sigma2)

    results = {
        "experiment": "pixel_distance",
        "budget": budget.to_dict(),
        "test_images": len(x),
        "train_images": len(train),
        "erase_rows": ERASE_ROWS,
        "reject_nats": REJECT_NATS,
        "sq_distance_erased": mean_and_stderr(d_erased),
        "sq_distance_shifted": mean_and_stderr(d_shifted),
        "sq_distance_nearest_training_digit_same_class": mean_and_stderr(nearest_same),
        "fraction_erased_closer_than_shifted": float((d_erased < d_shifted).float().mean()),
        "fraction_erased_closer_by_class": [
            float((d_erased < d_shifted)[labels == c].float().mean())
            if (labels == c).any()
            else None
            for c in range(10)
        ],
        "sigma": mean_and_stderr(sigma2.sqrt()),
        "shifted_minus_log_ratio_nats": mean_and_stderr(shifted_nats),
        "training_digits_closer_than_erased": {
            "median": float(closer.float().median()),
            "mean": float(closer.float().mean()),
            "fraction_of_test_digits_with_none": float((closer == 0).float().mean()),
        },
        "erase_sweep": [
            {
                "rows": rows,
                "sq_distance_erased": mean_and_stderr(sq_distance(x, erase_bottom(x, rows))),
                "fraction_closer_than_shifted": float(
                    (sq_distance(x, erase_bottom(x, rows)) < d_shifted).float().mean()
                ),
            }
            for rows in ERASE_SWEEP
        ],
        "ess_of_training_digits": {
            "median": float(ess.median()),
            "mean": float(ess.mean()),
            "max": float(ess.max()),
        },
    }
    # the tutorial's case: a 2 whose erased version is the closer one (the sweep below
    # says how common that is)
    like_tutorial = (labels == 2) & (d_erased < d_shifted)
    example = int(torch.nonzero(like_tutorial)[0]) if like_tutorial.any() else 0
    return common.finish(
        args.out,
        results,
        table(results),
        {
            "pixel_distance.png": distance_figure(
                x[example], erased[example], shifted[example], d_erased, d_shifted, ess
            )
        },
    )


def distance_figure(x, erased, shifted, d_erased, d_shifted, ess):
    """Figure 3 of the tutorial on a real digit, and the distances over the test split."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, 5, gridspec_kw={"width_ratios": [1, 1, 1, 1.8, 1.8]})
    panels = [
        ("(a) X, a test digit", x),
        (f"(b) erased: {((x - erased) ** 2).sum():.1f}", erased),
        (f"(c) half-pixel shift: {((x - shifted) ** 2).sum():.1f}", shifted),
    ]
    for ax, (title, image) in zip(axes[:3], panels, strict=True):
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    top = float(max(d_erased.max(), d_shifted.max()))
    axes[3].scatter(d_shifted, d_erased, s=4, alpha=0.5)
    axes[3].plot([0, top], [0, top], color="k", linewidth=0.8)
    axes[3].set_xlabel("||X - shifted||^2", fontsize=8)
    axes[3].set_ylabel("||X - erased||^2", fontsize=8)
    axes[3].set_title("below the line: the bad digit is closer", fontsize=8)
    axes[4].hist(ess.numpy(), bins=40)
    axes[4].set_xlabel("effective sample size of 4,000 real digits", fontsize=8)
    axes[4].set_title(f"sigma rejecting (b) by e^-{REJECT_NATS:g}", fontsize=8)
    fig.suptitle("squared pixel distance (sum over 784 pixels in [0, 1])", fontsize=9)
    fig.tight_layout()
    return fig


def table(r: dict) -> str:
    closer, ess = r["training_digits_closer_than_erased"], r["ess_of_training_digits"]

    def row(label, key):
        return [label, f"{r[key]['mean']:.2f}", f"{r[key]['stderr']:.2f}"]

    quantities = [
        row(f"X vs (b), bottom {r['erase_rows']} rows of ink erased", "sq_distance_erased"),
        row("X vs (c), shifted by half a pixel", "sq_distance_shifted"),
        row(
            "X vs the nearest training digit of its class",
            "sq_distance_nearest_training_digit_same_class",
        ),
        row(f"sigma that rejects (b) by e^-{r['reject_nats']:g}", "sigma"),
        row("-log P(c)/P(exact copy) at that sigma, nats", "shifted_minus_log_ratio_nats"),
    ]
    sweep = [
        [
            e["rows"],
            f"{e['sq_distance_erased']['mean']:.2f}",
            f"{100 * e['fraction_closer_than_shifted']:.1f}%",
        ]
        for e in r["erase_sweep"]
    ]
    by_class = ", ".join(
        f"{c}s {100 * v:.0f}%"
        for c, v in enumerate(r["fraction_erased_closer_by_class"])
        if v is not None
    )
    return "".join(
        [
            f"\nmnist5k grey levels in [0, 1], {r['test_images']} test digits against "
            f"{r['train_images']} training digits; squared distances summed over 784 pixels, "
            "mean ± s.e. over test digits. Deterministic: no training, no sampling.\n\n",
            markdown_table(["quantity", "mean", "std. error"], quantities),
            f"\nThe erased digit is closer than the shifted one for "
            f"{100 * r['fraction_erased_closer_than_shifted']:.1f}% of test digits ({by_class}). "
            f"At the sigma that rejects (b), a median of {closer['median']:.0f} of the "
            f"{r['train_images']} training digits is closer to X than (b) (none at all for "
            f"{100 * closer['fraction_of_test_digits_with_none']:.1f}% of test digits), and "
            f"the effective sample size of their weights P(X|x_i) is {ess['median']:.2f} "
            f"(median; mean {ess['mean']:.2f}, max {ess['max']:.2f}): a perfect generator's "
            "samples, and almost none of them counts.\n\n",
            markdown_table(
                ["rows of ink erased", "X vs erased", "erased closer than the half-pixel shift"],
                sweep,
            ),
            "\n",
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
