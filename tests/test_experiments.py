"""Every experiment script runs end to end with --quick, as a user would start it."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / f"{name}.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "results.md").read_text().count("|") > 10
    return json.loads((out / "results.json").read_text())


def test_likelihoods_experiment(tmp_path):
    results = run("likelihoods", tmp_path)
    names = [m["likelihood"]["name"] for m in results["models"]]
    assert set(names) == {
        "bernoulli",
        "continuous-bernoulli",
        "gaussian",
        "laplace",
        "beta",
        "discretized-logistic",
    }
    for m in results["models"]:
        # every model here is comparable: discrete, or a density on dequantized pixels
        d = 784
        log_px = m["log_px"]["mean"]
        if m["likelihood"]["name"] in ("bernoulli", "discretized-logistic"):
            expected = -log_px / (d * math.log(2))
        else:
            assert m["dequantized"]
            expected = -(log_px - d * math.log(256)) / (d * math.log(2))
        assert m["bits_per_dim_log_px"] == pytest.approx(expected)
        assert m["bits_per_dim_log_px"] > 0  # no model beats zero bits
    assert [m["data"] for m in results["models"]].count("binarized") == 1
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_sigma_sweep_experiment(tmp_path):
    results = run("sigma_sweep", tmp_path)
    rows = {str(r["sigma"]): r for r in results["rows"]}
    assert set(rows) == {"0.03", "0.1", "0.2", "0.5", "1.0", "shared"}
    # a larger sigma makes reconstruction cheap relative to the KL term: even after one
    # epoch the KL term at sigma = 1 is far below that at sigma = 0.03
    assert rows["1.0"]["kl"]["mean"] < 0.7 * rows["0.03"]["kl"]["mean"]
    assert rows["1.0"]["active_units"] <= rows["0.03"]["active_units"]
    assert rows["shared"]["learned_sigma"] > 1e-3  # bounded below, as documented
    for name in ("reconstructions.png", "samples.png", "tradeoff.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_cvae_completion_experiment(tmp_path):
    results = run("cvae_completion", tmp_path)
    tasks = {r["task"]: r for r in results["tasks"]}
    assert set(tasks) == {"center-column", "quadrants-1", "quadrants-2", "quadrants-3", "label"}
    assert tasks["center-column"]["x_dim"] == 28 and tasks["label"]["x_dim"] == 10
    for name, r in tasks.items():
        assert r["regressor"]["mean"] < 0  # an exact Bernoulli log-probability
        for prior in ("fixed", "learned"):
            m = r[f"cvae_{prior}"]
            # the K-sample estimate is at least the mean log weight of the same samples
            assert m["log_p_y_given_x"]["mean"] >= m["elbo"]["mean"]
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def experiment_module(name: str):
    """Import ``experiments/NAME.py`` (its folder holds ``common.py``, which it imports)."""
    import importlib

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_ring_experiment(tmp_path):
    ring = experiment_module("ring")
    results = run("ring", tmp_path)
    assert results["exact_mean_radius"] == pytest.approx(1 + math.sqrt(math.pi / 2) / 10)
    r = results["radius"]["data"]
    # the test points are samples of g(z): 4 standard errors around the exact mean radius
    assert abs(r["mean"] - results["exact_mean_radius"]) < 4 * r["stderr"]
    assert results["fraction_in_hole"]["data"] == 0.0  # no data point inside r = 0.9
    # D[p || P_model] >= 0 in expectation: the model cannot beat the exact density by
    # more than noise (4 paired standard errors)
    kl = results["kl_data_to_model"]
    assert kl["mean"] > -4 * kl["stderr"]
    assert (tmp_path / "ring.png").read_bytes()[:4] == b"\x89PNG"
    # the exact density integrates to one (midpoint rule on a 0.004 grid; the mass
    # beyond radius 2 is exp(-50))
    import torch

    axis = torch.arange(-2.0, 2.0, 0.004) + 0.002
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.flatten(), yy.flatten()], -1).double()
    total = ring.exact_log_density(points).exp().sum().item() * 0.004**2
    assert total == pytest.approx(1.0, abs=2e-3)


def test_pixel_distance_experiment(tmp_path):
    pd = experiment_module("pixel_distance")
    import torch

    # one lit pixel shifted by half a pixel spreads over four: (3/4)^2 + 3 (1/4)^2 = 0.75
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1
    assert pd.sq_distance(dot, pd.shift_half_pixel(dot)).item() == pytest.approx(0.75)
    # erasing removes exactly the ink of the lowest rows: their squares are the distance
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    image[:, 6:] = 0  # the lowest ink is in row 5
    erased = pd.erase_bottom(image, rows=2)
    assert torch.equal(erased[:, :4], image[:, :4]) and (erased[:, 4:] == 0).all()
    expected = (image[:, 4:6] ** 2).flatten(1).sum(-1)
    torch.testing.assert_close(pd.sq_distance(image, erased), expected)

    results = run("pixel_distance", tmp_path)
    sweep = [e["sq_distance_erased"]["mean"] for e in results["erase_sweep"]]
    assert sweep == sorted(sweep)  # erasing more rows moves further from X
    ess = results["ess_of_training_digits"]
    assert 1.0 <= ess["median"] <= ess["max"] <= results["train_images"]
    assert (tmp_path / "pixel_distance.png").read_bytes()[:4] == b"\x89PNG"


def test_naive_vs_importance_experiment(tmp_path):
    nvi = experiment_module("naive_vs_importance")
    import torch

    assert nvi.sample_sizes(1000) == [1, 3, 10, 30, 100, 300, 1000]
    assert nvi.sample_sizes(300) == [1, 3, 10, 30, 100, 300]
    # prefix estimates equal log-mean-exp of each prefix, computed directly
    log_w = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 10
    got = nvi.prefix_estimates(log_w, [1, 7, 50])
    for row, k in zip(got, [1, 7, 50], strict=True):
        expected = torch.logsumexp(log_w[:k], 0) - math.log(k)
        torch.testing.assert_close(row, expected)

    results = run("naive_vs_importance", tmp_path)
    first, last = results["rows"][0], results["rows"][-1]
    assert first["k"] == 1 and last["k"] == results["k_max"]
    # at K = 1 the naive estimate is log P(X|z) for one z from the prior: by Jensen its
    # expectation lies below log P(X), and on real digits by tens of nats
    assert first["prior"]["mean_minus_reference"] < -10
    # more samples raise both estimators towards log P(X)
    for name in ("prior", "guide"):
        assert last[name]["mean_minus_reference"] > first[name]["mean_minus_reference"]
    # z from Q gets within 1 nat at the largest K; the prior does not even come close
    assert abs(last["guide"]["mean_minus_reference"]) < 1
    assert last["prior"]["mean_minus_reference"] < -10
    assert (tmp_path / "naive_vs_importance.png").read_bytes()[:4] == b"\x89PNG"


def test_prior_samples_experiment(tmp_path):
    ps = experiment_module("prior_samples")
    import torch

    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    queries = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 5.0]])
    torch.testing.assert_close(
        ps.nearest_sq_distance(queries, reference), torch.tensor([0.0, 9.0, 1.0])
    )
    results = run("prior_samples", tmp_path)
    d = results["nearest_training_sq_distance"]
    # a binary image differs from a binary training image in whole pixels: distances
    # are counts, at least one pixel for a sample that is not a copy
    assert d["binary_samples"]["mean"] >= 1 and d["test_images"]["mean"] >= 1
    assert results["test_elbo"] < 0
    for name in ("samples.png", "binary_samples.png", "reconstructions.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_manifold_2d_experiment(tmp_path):
    m2 = experiment_module("manifold_2d")
    import torch

    grid = m2.quantile_grid(4)  # quantiles 1/8, 3/8, 5/8, 7/8 of N(0, 1)
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert grid.shape == (16, 2)
    torch.testing.assert_close(grid[:4, 0], q)  # the first row runs along z_1 ...
    assert (grid[:4, 1] == q[-1]).all()  # ... at the highest z_2
    train_z = torch.tensor([[0.0], [0.1], [5.0], [5.1], [5.2]])
    train_y = torch.tensor([0, 0, 1, 1, 1])
    test_z, test_y = torch.tensor([[0.05], [5.05]]), torch.tensor([0, 0])
    assert m2.knn_accuracy(train_z, train_y, test_z, test_y, k=1) == 0.5

    results = run("manifold_2d", tmp_path)
    assert results["budget"]["z_dim"] == 2 and len(results["posterior_mean_std"]) == 2
    assert results["log_px"]["mean"] >= results["elbo"]["mean"]  # same samples: Jensen
    for name in ("manifold.png", "latent.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_latent_dim_experiment(tmp_path):
    results = run("latent_dim", tmp_path)
    rows = {r["z_dim"]: r for r in results["rows"]}
    assert set(rows) == {2, 8}
    for z_dim, r in rows.items():
        assert 0 <= r["active_units"] <= z_dim  # a unit is counted at most once
        assert r["log_px"]["mean"] >= r["elbo"]["mean"]  # same samples: Jensen
        assert r["gap"]["mean"] == pytest.approx(r["log_px"]["mean"] - r["elbo"]["mean"])
    for name in ("samples.png", "latent_dim.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_autoencoder_limit_experiment(tmp_path):
    ae = experiment_module("autoencoder_limit")
    import torch

    # the KL term of N(mu, s^2 I) against N(0, I) is ||mu||^2 / 2 plus a constant in s
    mu = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    for s in (1.0, 0.1, 0.01):
        q = torch.distributions.Normal(mu, s)
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        torch.testing.assert_close(kl, 0.5 * (mu**2).sum(-1) + ae.kl_constant(3, s))
    assert ae.kl_constant(3, 1.0) == 0.0  # the notes' s = 1: exactly AE loss + L2

    # the fixed-scale guide samples with the fixed scale and learns only the mean
    vae = ae.FixedScaleVAE(16, z_dim=3, hidden_dims=(8,), fixed_scale=0.1)
    import pyro.poutine as poutine

    trace = poutine.trace(vae.guide).get_trace(torch.rand(4, 16).round())
    assert torch.equal(trace.nodes["z"]["fn"].base_dist.scale, torch.full((4, 3), 0.1))

    results = run("autoencoder_limit", tmp_path)
    rows = {r["scale"]: r for r in results["rows"]}
    assert set(rows) == {None, 1.0, 0.1, 0.01}
    z_dim = results["budget"]["z_dim"]
    for s in (1.0, 0.1, 0.01):
        assert rows[s]["terms"]["kl_constant"]["mean"] == pytest.approx(ae.kl_constant(z_dim, s))
    for r in rows.values():
        # the closed-form decomposition and the evaluator's sampled ELBO estimate the
        # same number from independent samples; 0.5 standard errors over images is far
        # wider than their Monte Carlo noise (measured: 0.02 to 1.5 nats, s.e. about 6)
        assert r["terms"]["negative_elbo"]["mean"] == pytest.approx(
            -r["elbo"]["mean"], abs=0.5 * r["elbo"]["stderr"]
        )
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_gap_over_training_experiment(tmp_path):
    results = run("gap_over_training", tmp_path)
    assert set(results["curves"]) == {"elbo", "iwae"}
    for rows in results["curves"].values():
        assert [r["epoch"] for r in rows] == [1, 2]
        for r in rows:
            assert r["gap"]["mean"] == pytest.approx(r["log_px"]["mean"] - r["elbo"]["mean"])
            assert r["gap"]["mean"] >= 0  # same samples: log-mean-exp >= mean
        # a second epoch of training raises log P(X) by far more than the estimate's noise
        assert rows[1]["log_px"]["mean"] > rows[0]["log_px"]["mean"] + 10
    assert (tmp_path / "gap_over_training.png").read_bytes()[:4] == b"\x89PNG"
