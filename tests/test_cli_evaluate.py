"""``pyro-vae evaluate`` on a VAE run: files, numbers against the library, bad input,
and the exit status of a failed consistency check."""

import json

import numpy as np
import pytest
from conftest import UNRELIABLE, check_unreliable_line
from pictures import assert_axes_match

from pyro_vae import plots
from pyro_vae.cli import main
from pyro_vae.evaluate import evaluate_dataset
from pyro_vae.gaps import decompose_gap
from pyro_vae.run import open_run
from pyro_vae.splits import spread_subset


@pytest.mark.filterwarnings(UNRELIABLE)
def test_evaluate_writes_its_report_and_gap_decomposition(run_copy, capsys, tmp_path):
    args = ["evaluate", "--run", str(run_copy), "--num-samples", "200", "--ks", "1,5,50"]
    gap = ["--gap-decomposition", "--gap-points", "8", "--gap-steps", "30", "--no-progress"]
    assert main([*args, *gap]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "| ELBO (= L_1) |" in out and "approximation gap" in out
    report = json.loads((run_copy / "eval.json").read_text())
    assert check_unreliable_line(captured.err, report)  # a fifth of the images, K = 200
    s = report["summary"]
    assert report["num_samples"] == 200 and report["ks"] == [1, 5, 50]
    assert len(report["per_point"]["log_px"]) == report["num_points"] == 359
    # the evaluator's ELBO (200 samples per image) against Trace_ELBO with 10 fresh
    # particles: independent Monte Carlo estimates of one number; over 359 images their
    # means differ by well under 0.3 nats (the per-image noise is about 1 nat)
    assert -report["negative_elbo_10_particles"] == pytest.approx(s["elbo"]["mean"], abs=0.3)
    g = report["gap_decomposition"]
    assert g["num_points"] == 8 and g["steps"] == 30 and g["num_samples"] == 200
    # the library's decomposition of the same 8 evenly spaced test images, with the same
    # steps, K and seed, gives the same numbers
    model, dataset, _, _ = open_run(run_copy)
    (x,) = model.evaluation_data(dataset, "test")
    gaps = decompose_gap(model, x[spread_subset(len(x), 8)], steps=30, num_samples=200, seed=0)
    for name in ("log_px", "elbo_amortized", "elbo_optimal", "approximation_gap"):
        values = getattr(gaps, name).double()
        assert g[name]["mean"] == pytest.approx(float(values.mean()), rel=1e-6, abs=1e-6), name
        assert g[name]["stderr"] == pytest.approx(float(values.std() / 8**0.5), rel=1e-4), name
    amortization = gaps.amortization_gap.double()
    assert g["amortization_gap"]["mean"] == pytest.approx(float(amortization.mean()), abs=1e-5)
    # q* fitted per image beats the encoder's q, and log P(X) lies above both ELBOs
    assert g["amortization_gap"]["mean"] > 0
    assert g["log_px"]["mean"] >= g["elbo_optimal"]["mean"] > g["elbo_amortized"]["mean"]
    assert_axes_match(run_copy / "bounds.png", plots.bounds_figure(report), tmp_path)
    assert "| quantity | mean | std. error |" in (run_copy / "eval.md").read_text()


def test_evaluate_train_split_with_limit_matches_the_library(run_copy):
    args = ["evaluate", "--run", str(run_copy), "--num-samples", "20", "--ks", "1,5"]
    assert main([*args, "--split", "train", "--limit", "30", "--seed", "7", "--no-progress"]) == 0
    report = json.loads((run_copy / "eval_train_n30.json").read_text())
    assert report["split"] == "train" and report["num_points"] == 30
    # the same evaluation in-process: same split, subset, K and seed give the same numbers
    model, dataset, _, _ = open_run(run_copy)
    (x,) = model.evaluation_data(dataset, "train")
    x = x[spread_subset(len(x), 30)]
    ev = evaluate_dataset(model.model, model.guide, x, num_samples=20, ks=(1, 5), seed=7)
    np.testing.assert_allclose(report["per_point"]["log_px"], ev.log_px.tolist(), rtol=1e-6)
    np.testing.assert_allclose(report["per_point"]["L_5"], ev.bounds[1].tolist(), rtol=1e-6)


def test_evaluate_defaults_fit_small_k_and_json_stays_strict(run_copy):
    args = ["evaluate", "--run", str(run_copy), "--num-samples", "20", "--limit", "1"]
    assert main([*args, "--no-progress"]) == 0
    text = (run_copy / "eval_n1.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # a single image has no std. error
    report = json.loads(text)
    assert report["ks"] == [1, 5]  # the default 1,5,50,500 cut to K = 20
    assert report["summary"]["log_px"]["stderr"] is None


def test_a_failed_ordering_check_exits_1_on_stderr(run_copy, capsys, monkeypatch):
    """An accumulation bug that lowers L_5 below the ELBO for one image must not pass:
    the report is written, the error goes to stderr, the exit status is 1."""
    import pyro_vae.cli.evaluate as cli_evaluate

    def broken(*args, **kwargs):
        result = evaluate_dataset(*args, **kwargs)
        if result.proposal == "guide":
            result.bounds[1, 0] = result.elbo[0] - 3.0  # L_5 of image 0, 3 nats too low
        return result

    monkeypatch.setattr(cli_evaluate, "evaluate_dataset", broken)
    args = ["evaluate", "--run", str(run_copy), "--num-samples", "10", "--ks", "1,5"]
    assert main([*args, "--limit", "4", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "pyro-vae: error: L_5 is below elbo by 3 nats" in captured.err
    assert "pyro-vae: error" not in captured.out
    report = json.loads((run_copy / "eval_n4.json").read_text())
    assert len(report["order_violations"]) == 1


def _naive_row(text):
    return [line for line in text.splitlines() if "the prior" in line]


@pytest.mark.parametrize(
    "extra,k_naive",
    [
        (["--num-samples", "600"], 500),  # the default, below --num-samples
        (["--num-samples", "20"], 20),  # the default, capped at --num-samples
        (["--num-samples", "20", "--naive-samples", "50"], 50),  # as given, even above K
    ],
)
@pytest.mark.filterwarnings(UNRELIABLE)
def test_naive_pass_runs_at_its_own_k(run_copy, capsys, extra, k_naive):
    args = ["evaluate", "--run", str(run_copy), *extra, "--ks", "1,5", "--limit", "6"]
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    report = json.loads((run_copy / "eval_n6.json").read_text())
    # K = 600 fits a k-hat to each image's weights (above 0.7 for 2 of the 6); K = 20 none
    assert check_unreliable_line(captured.err, report) == (int(extra[1]) == 600)
    assert report["num_samples"] == int(extra[1])
    assert report["num_samples_prior"] == k_naive
    # the numbers are those of the library's naive estimator at that K and seed
    model, dataset, _, _ = open_run(run_copy)
    (x,) = model.evaluation_data(dataset, "test")
    x = x[spread_subset(len(x), 6)]
    naive = evaluate_dataset(
        model.model, None, x, num_samples=k_naive, ks=(1,), proposal="prior", seed=0
    )
    np.testing.assert_allclose(
        report["per_point"]["log_px_prior"], naive.log_px.tolist(), rtol=1e-6
    )
    s = report["summary"]
    assert s["log_px_prior"]["mean"] == pytest.approx(float(naive.log_px.double().mean()))
    assert 1.0 <= s["ess_prior"]["min"] <= s["ess_prior"]["mean"] <= k_naive
    assert set(report["bits_per_dim"]) == {"elbo", "log_px", "log_px_prior"}
    # the table row and the ESS row state the naive pass's own K
    mean, stderr = s["log_px_prior"]["mean"], s["log_px_prior"]["stderr"]
    row = f"| log P(X), z from the prior P(z) (K = {k_naive}) | {mean:.2f} | {stderr:.2f} |"
    ess = (
        f"| the prior P(z), K = {k_naive} | {s['ess_prior']['mean']:.2f} "
        f"| {s['ess_prior']['min']:.2f} |"
    )
    assert _naive_row(out) == [row, ess]
    assert _naive_row((run_copy / "eval_n6.md").read_text()) == [row, ess]
    assert f"naive estimate (z from the prior, K={k_naive}): {mean:.2f}\n" in (
        plots.bounds_figure(report).axes[0].get_title()
    )


def test_naive_samples_0_skips_the_prior_pass(run_copy, capsys, monkeypatch, tmp_path):
    import pyro_vae.cli.evaluate as cli_evaluate

    proposals = []

    def spy(*args, **kwargs):
        result = evaluate_dataset(*args, **kwargs)
        proposals.append((result.proposal, result.num_samples))
        return result

    monkeypatch.setattr(cli_evaluate, "evaluate_dataset", spy)
    args = ["evaluate", "--run", str(run_copy), "--num-samples", "20", "--limit", "6"]
    assert main([*args, "--naive-samples", "0", "--no-progress"]) == 0
    assert proposals == [("guide", 20)]  # no pass with z from the prior at all
    out = capsys.readouterr().out
    report = json.loads((run_copy / "eval_n6.json").read_text())
    assert "num_samples_prior" in report and report["num_samples_prior"] is None
    assert report["num_samples"] == 20
    assert "log_px_prior" not in report["summary"] and "ess_prior" not in report["summary"]
    assert set(report["per_point"]) == {"elbo", "log_px", "L_1", "L_5", "ess", "khat"}
    assert set(report["bits_per_dim"]) == {"elbo", "log_px"}
    note = (
        "No naive estimate of log P(X) with z from the prior P(z) was made (`--naive-samples 0`)."
    )
    for text in (out, (run_copy / "eval_n6.md").read_text()):
        assert _naive_row(text) == [note]
        assert "| the prior" not in text
    figure = plots.bounds_figure(report)
    assert "naive" not in figure.axes[0].get_title()
    assert_axes_match(run_copy / "bounds_n6.png", figure, tmp_path)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num-samples", "10", "--ks", "1,50"], "--ks 50 exceeds --num-samples 10"),
        (["--gap-decomposition", "--gap-steps", "-1"], "expected an integer in [0, "),
        (
            ["--naive-samples", "-1"],
            "argument --naive-samples: expected an integer in [0, ",
        ),
    ],
)
def test_evaluate_bad_input_exits_2(digits_run, capsys, extra, message):
    try:
        status = main(["evaluate", "--run", str(digits_run), *extra])
    except SystemExit as exit_info:  # refused by the parser
        status = exit_info.code
    assert status == 2
    assert message in capsys.readouterr().err


def test_evaluate_needs_a_run(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "no run in" in capsys.readouterr().err
