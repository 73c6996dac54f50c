"""``pyro-vae evaluate --method ais|both`` and ``--bdmc``: files, numbers against the
library, refusals with exit 2 and nothing written."""

import json

import numpy as np
import pytest
from conftest import UNRELIABLE, check_unreliable_line

from pyro_vae.ais import ais_dataset
from pyro_vae.cli import main
from pyro_vae.run import open_run
from pyro_vae.splits import spread_subset

#: tiny AIS settings for a digits run
TINY = ["--ais-steps", "20", "--ais-chains", "3", "--leapfrog-steps", "2", "--no-progress"]


def _status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # refused by the parser
        return stop.code


@pytest.mark.filterwarnings(UNRELIABLE)
def test_both_methods_side_by_side_with_their_paired_difference(run_copy, capsys):
    argv = ["evaluate", "--run", str(run_copy), "--num-samples", "100", "--limit", "12"]
    assert main([*argv, "--method", "both", "--seed", "3", *TINY]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "AIS from Q(z\\|X), T = 20, C = 3, L = 2" in out
    assert "| AIS - IS, log P(X) paired per point |" in out
    assert "Pareto k-hat of each point's K weights" in out
    report = json.loads((run_copy / "eval_n12.json").read_text())
    a, per_point = report["ais"], report["per_point"]
    assert (a["num_steps"], a["num_chains"], a["leapfrog_steps"]) == (20, 3, 2)
    assert a["init"] == "guide" and a["schedule"] == "sigmoid" and report["method"] == "both"
    ais = np.array(per_point["log_px_ais"])
    is_ = np.array(per_point["log_px"])
    assert len(ais) == len(per_point["khat"]) == len(per_point["ais_acceptance"]) == 12
    # the paired difference is the mean of the per-point differences, with its s.e.
    assert a["minus_is"]["mean"] == pytest.approx(float(np.mean(ais - is_)))
    assert a["minus_is"]["stderr"] == pytest.approx(float(np.std(ais - is_, ddof=1) / 12**0.5))
    khat = np.array(per_point["khat"], dtype=float)
    share = report["summary"]["khat"]["share_unreliable"]
    assert share == pytest.approx(float(np.mean(khat > 0.7)))
    assert check_unreliable_line(captured.err, report)  # 4 of the 12 points
    # the same AIS in-process: same points, settings and seed give the same numbers
    model, dataset, _, _ = open_run(run_copy)
    (x,) = model.evaluation_data(dataset, "test")
    x = x[spread_subset(len(x), 12)]
    direct = ais_dataset(
        model.model, model.proposal, x, seed=3, num_steps=20, num_chains=3, leapfrog_steps=2
    )
    np.testing.assert_allclose(ais, direct.log_px.numpy(), rtol=1e-5)
    assert (run_copy / "bounds_n12.png").exists()


def test_ais_alone_and_bdmc_on_simulated_points(run_copy, capsys):
    argv = ["evaluate", "--run", str(run_copy), "--limit", "5", "--method", "ais"]
    assert main([*argv, "--bdmc", "4", "--ais-init", "prior", *TINY]) == 0
    out = capsys.readouterr().out
    assert "annealed importance sampling" in out and "K = " not in out
    assert "AIS from the prior P(z)" in out
    assert "| width upper - lower |" in out
    report = json.loads((run_copy / "eval_n5.json").read_text())
    assert report["num_samples"] is None and "log_px" not in report["summary"]
    assert len(report["per_point"]["log_px_ais"]) == 5
    b = report["bdmc"]
    assert b["num_points"] == 4 and len(b["per_point"]["upper"]) == 4
    widths = np.subtract(b["per_point"]["upper"], b["per_point"]["lower"])
    assert b["width"]["mean"] == pytest.approx(float(widths.mean()))
    # T = 20 from the prior is far from tight; the sandwich still has the right order on
    # average (each bound is stochastic, so single points may cross)
    assert b["width"]["mean"] > 0
    assert not (run_copy / "bounds_n5.png").exists()  # no IWAE bounds without IS


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ais-steps", "0"], "argument --ais-steps: expected an integer in [1, "),
        (["--ais-chains", "0"], "argument --ais-chains: expected an integer in [1, "),
        (["--leapfrog-steps", "0"], "argument --leapfrog-steps: expected an integer in [1, "),
        (["--ais-step-size", "0"], "expected a number in (0, 1), got 0"),
        (["--ais-step-size", "1.5"], "expected a number in (0, 1), got 1.5"),
        (["--ais-step-size", "x"], "expected a number, got 'x'"),
        (["--method", "mcmc"], "invalid choice: 'mcmc'"),
        (["--bdmc", "-1"], "argument --bdmc: expected an integer >= 0, got -1"),
        (["--bdmc", "100000"], "--bdmc 100000 exceeds the 359 points of the test split"),
    ],
)
def test_bad_ais_settings_exit_2_and_write_nothing(run_copy, capsys, extra, message):
    before = sorted(p.name for p in run_copy.iterdir())
    assert _status(["evaluate", "--run", str(run_copy), "--method", "ais", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run_copy.iterdir()) == before


@pytest.mark.parametrize("option", [["--ais-steps", "50"], ["--ais-init", "prior"]])
def test_ais_options_without_ais_are_refused(run_copy, capsys, option):
    assert _status(["evaluate", "--run", str(run_copy), *option]) == 2
    err = capsys.readouterr().err
    assert f"{option[0]} sets annealed importance sampling, which runs only with" in err
    assert not list(run_copy.glob("eval*"))


def test_a_model_without_latents_or_with_discrete_ones_is_refused(tmp_path, capsys):
    fast = ["--dataset", "digits", "--epochs", "1", "--hidden-dims", "8", "--no-progress"]
    regressor = tmp_path / "regressor"
    assert (
        main(["train", *fast, "--model", "regressor", "--task", "label", "--out", str(regressor)])
        == 0
    )
    assert _status(["evaluate", "--run", str(regressor), "--bdmc", "3"]) == 2
    assert "has no latent variable, so its log-likelihood is exact; drop --bdmc" in (
        capsys.readouterr().err
    )
    vq = tmp_path / "vq"
    assert main(["train", *fast, "--model", "vqvae", "--vq-codes", "4", "--out", str(vq)]) == 0
    assert _status(["evaluate", "--run", str(vq), "--method", "both"]) == 2
    err = capsys.readouterr().err.strip()
    assert "latent site 'z' is discrete" in err and "exact log-likelihood" in err
    assert len(err.splitlines()) == 1
    assert not list(vq.glob("eval*"))


def test_an_interrupted_ais_evaluation_writes_nothing(run_copy, monkeypatch):
    from pyro_vae import ais

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ais, "ais_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(
            [
                "evaluate",
                "--run",
                str(run_copy),
                "--method",
                "both",
                "--limit",
                "3",
                "--num-samples",
                "10",
                "--no-progress",
            ]
        )
    assert not list(run_copy.glob("eval*")) and not list(run_copy.glob("*.tmp*"))
