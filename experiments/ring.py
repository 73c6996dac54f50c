"""Doersch figure 2: a deterministic function turns N(0, I) into a ring, and a VAE learns it.

The tutorial's point: any distribution in d dimensions is N(0, I) pushed through a
complicated enough function, so a VAE may keep the simple prior and let the decoder
do the work. ``g(z) = z / 10 + z / ||z||`` maps 2-D normal samples onto a ring of
radius ``1 + ||z|| / 10``. The radius minus one is Rayleigh distributed with scale
0.1, so the ring's density is known exactly:

    log p(x) = log(r - 1) - 2 log 0.1 - (r - 1)^2 / 0.02 - log(2 pi r),  r = ||x|| > 1

and its mean radius is ``1 + sqrt(pi / 2) / 10 = 1.1253``.

A VAE with a 2-D latent, N(0, I) prior and a Gaussian P(x|z) with one learned sigma is
trained on samples of the ring. Reported: the mean radius of the data, of the
decoder's means and of its samples; the fraction of samples inside the hole
(r < 0.9); the test ELBO and importance-sampled log P(X) against the exact mean
log-density, whose difference estimates D[p || P_model] >= 0. The figure shows z, g(z),
samples of the trained VAE and its learned density log P(x) on a grid.

Usage: ``python experiments/ring.py [--quick] [--out results/ring]``
"""

from __future__ import annotations

import math
import sys
import time

import common
import pyro
import torch

from pyro_vae import VAE, Gaussian, TrainConfig, fit
from pyro_vae.evaluate import evaluate_dataset, log_likelihood, mean_and_stderr
from pyro_vae.tables import markdown_table

#: for `pyro-vae reproduce`: the section title on the results page, the discussion page
#: in docs/, the expected wall minutes of the full run on 2 CPU cores, and the position
#: on the results page
TITLE = "Figure 2: a ring from N(0, I), and a VAE that learns it"
PAGE = "ring.md"
MINUTES = 1
ORDER = 1

#: Rayleigh scale of the radius minus one: g(z) = z / 10 + z / ||z||
RING_SCALE = 0.1
#: E||g(z)|| for z ~ N(0, I_2): 1 + E||z|| / 10 with E||z|| = sqrt(pi / 2)
EXACT_MEAN_RADIUS = 1 + math.sqrt(math.pi / 2) * RING_SCALE
#: a sample this far inside the ring's edge (r = 1) falls where the data never are
HOLE_RADIUS = 0.9
TRAIN_POINTS, TEST_POINTS = 20000, 2000
GRID = 121  # points per side of the density image


def g(z: torch.Tensor) -> torch.Tensor:
    """Doersch's ring map ``z / 10 + z / ||z||``, row-wise."""
    return z * RING_SCALE + z / z.norm(dim=-1, keepdim=True)


def exact_log_density(x: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` of ``g(z)``, ``z ~ N(0, I_2)``: ``-inf`` inside the unit circle."""
    r = x.norm(dim=-1)
    s = (r - 1).clamp(min=0)
    log_rayleigh = s.log() - 2 * math.log(RING_SCALE) - s**2 / (2 * RING_SCALE**2)
    return torch.where(r > 1, log_rayleigh - torch.log(2 * math.pi * r), -math.inf)


def ring_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, g(z))`` for ``n`` draws of ``z ~ N(0, I_2)``."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return z, g(z)


def main(argv=None) -> dict:
    """Train the VAE on the ring; returns the results written to ``results.json``."""
    args = common.parser("ring", __doc__.splitlines()[0]).parse_args(argv)
    budget = common.budget_from(args)
    hidden = (16,) if args.quick else (128, 128)
    # separate streams: no seed's test points are another seed's training points
    _, x_train = ring_data(TRAIN_POINTS, seed=2 * budget.seed)
    z_show, x_test = ring_data(TEST_POINTS, seed=2 * budget.seed + 1)
    x_test = x_test[: max(budget.test_images, 1)]

    pyro.set_rng_seed(budget.seed)
    vae = VAE(2, z_dim=2, hidden_dims=hidden, likelihood=Gaussian("shared"))
    t0 = time.perf_counter()
    history = fit(
        vae,
        x_train,
        x_test,
        config=TrainConfig(epochs=budget.epochs, batch_size=256, lr=3e-3, seed=budget.seed),
        progress=not args.quick,
    )
    seconds = time.perf_counter() - t0
    vae.eval()
    pyro.set_rng_seed(budget.seed)
    ev = evaluate_dataset(vae.model, vae.guide, x_test, num_samples=budget.num_samples, ks=(1,))
    exact = exact_log_density(x_test)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(budget.seed)
        means = vae.sample(TEST_POINTS, generator=gen)  # decoder means f(z), z ~ N(0, I)
        z = torch.randn(TEST_POINTS, 2, generator=gen)
        samples = vae.likelihood(vae.decoder(z)).sample()  # x ~ P(x|z)
        sigma = float(vae.likelihood.loc_scale(torch.zeros(1, 2))[1])
    density = density_grid(vae, min(budget.num_samples, 1000), budget.seed)

    def radius(points):
        return mean_and_stderr(points.norm(dim=-1))

    s = ev.summary()
    results = {
        "experiment": "ring",
        "budget": {**budget.to_dict(), "z_dim": 2, "hidden_dims": list(hidden)},
        "train_points": TRAIN_POINTS,
        "test_points": len(x_test),
        "exact_mean_radius": EXACT_MEAN_RADIUS,
        "radius": {
            "data": radius(x_test),
            "decoder_means": radius(means),
            "decoder_samples": radius(samples),
        },
        "fraction_in_hole": {
            "data": float((x_test.norm(dim=-1) < HOLE_RADIUS).float().mean()),
            "decoder_samples": float((samples.norm(dim=-1) < HOLE_RADIUS).float().mean()),
        },
        "learned_sigma": sigma,
        "exact_log_density": mean_and_stderr(exact),
        "elbo": s["elbo"],
        "log_px": s["log_px"],
        # paired per point: E_p[log p - log P_model] = D[p || P_model] >= 0
        "kl_data_to_model": mean_and_stderr(exact - ev.log_px),
        "final_test_elbo": history.test_elbo[-1],
        "train_seconds": seconds,
    }
    return common.finish(
        args.out,
        results,
        table(results),
        {"ring.png": ring_figure(z_show, means, samples, density)},
    )


@torch.no_grad()
def density_grid(vae, num_samples: int, seed: int, half_width: float = 1.6):
    """The model's ``log P(x)`` on a ``GRID x GRID`` square, importance-sampled with Q."""
    axis = torch.linspace(-half_width, half_width, GRID)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.flatten(), yy.flatten()], -1)
    pyro.set_rng_seed(seed)
    log_p = torch.cat(
        [
            log_likelihood(vae.model, vae.guide, chunk, num_samples=num_samples).log_px
            for chunk in points.split(2000)
        ]
    )
    return axis, log_p.reshape(GRID, GRID)


def ring_figure(z, means, samples, density):
    """Four panels: z ~ N(0, I); g(z); samples of the trained VAE; its log-density."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 4)
    angle = torch.atan2(z[:, 1], z[:, 0])
    ring = g(z)
    panels = [
        (axes[0], z, "z ~ N(0, I)", angle),
        (axes[1], ring, "g(z) = z/10 + z/||z||", angle),
        (axes[2], samples, "trained VAE: x ~ P(x|z), z ~ N(0, I)", None),
    ]
    for ax, pts, title, colour in panels:
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c=colour, cmap="hsv" if colour is not None else None)
        ax.set_title(title, fontsize=9)
    axes[2].scatter(means[:, 0], means[:, 1], s=1, color="k", label="decoder means f(z)")
    axes[2].legend(loc="upper right", fontsize=7, markerscale=4)
    axis, log_p = density
    extent = (axis[0].item(), axis[-1].item(), axis[0].item(), axis[-1].item())
    image = axes[3].imshow(
        log_p.clamp(min=-10).numpy(), origin="lower", extent=extent, cmap="viridis"
    )
    fig.colorbar(image, ax=axes[3], fraction=0.046, pad=0.04)
    theta = torch.linspace(0, 2 * math.pi, 200)
    axes[3].plot(theta.cos(), theta.sin(), color="w", linewidth=0.8, linestyle="--")
    axes[3].set_title("learned log P(x), nats (dashed: r = 1)", fontsize=9)
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(-3 if ax is axes[0] else -1.6, 3 if ax is axes[0] else 1.6)
        ax.set_ylim(-3 if ax is axes[0] else -1.6, 3 if ax is axes[0] else 1.6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def table(results: dict) -> str:
    b, r = results["budget"], results["radius"]

    def stat(label: str, value: dict, digits: int) -> list[str]:
        return [label, f"{value['mean']:.{digits}f}", f"{value['stderr']:.{digits}f}"]

    radius = [["exact, 1 + sqrt(pi/2)/10", f"{results['exact_mean_radius']:.4f}", ""]]
    radius += [
        stat(label, r[key], 4)
        for label, key in (
            ("data", "data"),
            ("decoder means f(z)", "decoder_means"),
            ("decoder samples", "decoder_samples"),
        )
    ]
    density = [
        stat("exact log p(x)", results["exact_log_density"], 3),
        stat("VAE log P(X), importance-sampled", results["log_px"], 3),
        stat("VAE ELBO", results["elbo"], 3),
        stat("exact - VAE (estimates D[p || P_model])", results["kl_data_to_model"], 3),
    ]
    return (
        f"\nRing g(z) = z/10 + z/||z||: {results['train_points']} training points, "
        f"{results['test_points']} test points, K = {b['num_samples']}; VAE 2-"
        f"{'-'.join(map(str, b['hidden_dims']))}-2, Gaussian P(x|z) with learned sigma "
        f"({results['learned_sigma']:.3f}), {b['epochs']} epochs, seed {b['seed']}, one run.\n\n"
        + markdown_table(["radius of x", "mean", "std. error"], radius)
        + "\n"
        + markdown_table(["test log-density (nats per point)", "mean", "std. error"], density)
        + f"\nSamples inside the hole (r < {HOLE_RADIUS}): data "
        f"{results['fraction_in_hole']['data']:.3f}, VAE "
        f"{results['fraction_in_hole']['decoder_samples']:.3f}.\n\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
