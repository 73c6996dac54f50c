import math

import pytest
import torch

from pyro_vae.data import dequantize
from pyro_vae.units import bits_per_dim


def test_uniform_density_on_dequantized_data_is_log2_levels_bits():
    # p(y) = 1 on [0, 1)^D: every one of the levels^D discrete images has probability
    # levels^-D, so exactly log2(levels) bits per dimension
    d, levels = 784, 256
    assert bits_per_dim(0.0, d, discrete=False, levels=levels, dequantized=True) == pytest.approx(
        8.0
    )


def test_histogram_density_on_dequantized_data_matches_the_discrete_model():
    # A density that is constant on every bin, p(y) = levels * P(k) for y in bin k
    # (per dimension), turns the bound log P(k) >= log p(y) - D ln(levels) into an
    # equality: its bits/dim on dequantized data must equal the discrete model's
    # bits/dim on the grey levels, whatever u was drawn
    levels, d, n = 17, 3, 50
    g = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(d, levels, generator=g, dtype=torch.float64), -1)
    k = torch.randint(levels, (n, d), generator=g)
    log_p_k = log_probs.gather(1, k.T).T.sum(-1)  # (n,): log P(k) of each point
    y = dequantize(k.double() / (levels - 1), levels, generator=g)
    bins = (y * levels).floor().long()  # the bin that y falls in
    log_p_y = (math.log(levels) + log_probs.gather(1, bins.T).T).sum(-1)
    discrete = bits_per_dim(log_p_k, d, discrete=True)
    continuous = bits_per_dim(log_p_y, d, discrete=False, levels=levels, dequantized=True)
    torch.testing.assert_close(continuous, discrete, rtol=1e-12, atol=1e-12)


def test_discrete_and_incomparable_cases():
    assert bits_per_dim(-784 * math.log(2), 784, discrete=True) == pytest.approx(1.0)
    assert bits_per_dim(-100.0, 784, discrete=False, levels=256, dequantized=False) is None


def test_dequantize_keeps_each_value_in_its_own_bin():
    levels = 17
    k = torch.arange(levels).repeat(100).float()
    y = dequantize(k / (levels - 1), levels, generator=torch.Generator().manual_seed(0))
    assert ((y * levels).floor() == k).all()  # (k + u) / levels stays in bin k
    assert (y >= 0).all() and (y < 1).all()
    # u is uniform: the position inside the bin averages 1/2 (3 s.e. of 1700 draws)
    assert abs((y * levels - k).mean().item() - 0.5) < 3 * (1 / 12 / 1700) ** 0.5


def test_load_dequantizes_the_test_split_once_and_marks_the_data():
    from pyro_vae import data
    from pyro_vae.errors import UsageError

    grey = data.load("digits")
    d = data.load("digits", dequantize=True)
    assert d.dequantized and d.levels == 17
    assert torch.equal(d.x_train, grey.x_train)  # batches are dequantized during training
    k = (grey.x_test * 16).round()
    assert torch.equal((d.x_test * 17).floor(), k)  # every value stays in its own bin
    assert torch.equal(d.x_test, data.load("digits", dequantize=True).x_test)  # fixed seed
    with pytest.raises(UsageError, match="do not combine it with binarize"):
        data.load("digits", dequantize=True, binarize="static")


def test_cli_reports_bits_per_dim_only_where_comparable(tmp_path):
    import json

    from pyro_vae.cli import main

    base = ["train", "--dataset", "digits", "--epochs", "1", "--hidden-dims", "16", "--z-dim", "2"]
    cases = {
        "dequantized": ["--likelihood", "gaussian", "--dequantize"],
        "grey": ["--likelihood", "gaussian"],
        "binarized": ["--likelihood", "bernoulli"],
    }
    results = {}
    for name, extra in cases.items():
        assert main([*base, *extra, "--out", str(tmp_path / name), "--no-progress"]) == 0
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    d = results["dequantized"]
    expected = -(d["test_elbo"] - 64 * math.log(17)) / (64 * math.log(2))
    assert d["test_elbo_bits_per_dim"] == pytest.approx(expected)
    assert results["grey"]["test_elbo_bits_per_dim"] is None  # a density on raw grey levels
    b = results["binarized"]
    assert b["test_elbo_bits_per_dim"] == pytest.approx(-b["test_elbo"] / (64 * math.log(2)))
    # evaluate converts its log P(X) the same way
    args = ["evaluate", "--run", str(tmp_path / "dequantized"), "--num-samples", "10"]
    assert main([*args, "--no-progress"]) == 0
    report = json.loads((tmp_path / "dequantized" / "eval.json").read_text())
    log_px = report["summary"]["log_px"]["mean"]
    assert report["bits_per_dim"]["log_px"] == pytest.approx(
        -(log_px - 64 * math.log(17)) / (64 * math.log(2))
    )
