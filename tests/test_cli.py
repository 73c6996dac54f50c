import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae.cli import main

FAST = [
    "--dataset",
    "digits",
    "--epochs",
    "2",
    "--hidden-dims",
    "32",
    "--z-dim",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    return out


def test_train_writes_every_promised_output(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {
        "config.json",
        "checkpoint.pt",
        "history.json",
        "results.json",
        "results.md",
        "loss.png",
        "samples.png",
        "reconstructions.png",
    } <= names
    config = json.loads((trained_run / "config.json").read_text())
    assert config["data"]["dataset"] == "digits" and config["data"]["binarize"] == "dynamic"
    from pathlib import Path

    assert config["data"]["data_dir"] == str(
        Path("data").resolve()
    )  # absolute: usable from anywhere
    assert config["model"]["z_dim"] == 2 and config["model"]["hidden_dims"] == [32]
    history = json.loads((trained_run / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    results = json.loads((trained_run / "results.json").read_text())
    # 64 pixels: a Bernoulli ELBO lies between -64 log 2 (coin flips) and 0
    assert -64 * np.log(2) - 5 < results["test_elbo"] < 0
    assert "| test |" in (trained_run / "results.md").read_text()
    for png in ("loss.png", "samples.png", "reconstructions.png"):
        assert (trained_run / png).read_bytes()[:4] == b"\x89PNG"


def test_sample_command_runs_as_a_console_script(trained_run, tmp_path):
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyro_vae.cli",
            "sample",
            "--run",
            str(trained_run),
            "-n",
            "9",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_and_refuses_other_settings(trained_run, capsys):
    assert (
        main(["train", "--out", str(trained_run), "--resume", "--epochs", "3", "--no-progress"])
        == 0
    )
    history = json.loads((trained_run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    assert main(["train", "--out", str(trained_run), "--resume", "--z-dim", "5"]) == 2
    assert "--z-dim 5 (run has 2)" in capsys.readouterr().err


def test_same_seed_same_run(tmp_path):
    for name in ("a", "b"):
        assert main(["train", *FAST, "--seed", "3", "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text()) for n in ("a", "b"))
    assert a["train_objective"] == b["train_objective"] and a["test_elbo"] == b["test_elbo"]
    assert main(["train", *FAST, "--seed", "4", "--out", str(tmp_path / "c")]) == 0
    c = json.loads((tmp_path / "c" / "history.json").read_text())
    assert c["train_objective"] != a["train_objective"]


def test_existing_run_is_not_overwritten_silently(trained_run, capsys):
    assert main(["train", *FAST, "--out", str(trained_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "cifar"], "valid names: mnist5k, digits, mnist, fashion-mnist, npz:PATH"),
        (["--dataset", "digits", "--binarize", "none"], "--binarize static or --binarize dynamic"),
        (["--dataset", "digits", "--batch-size", "5000"], "larger than the training split"),
        (["--dataset", "digits", "--objective", "iwae", "--beta", "2"], "no separate KL term"),
        (["--dataset", "digits", "--lr", "0"], "lr must be a finite number > 0"),
        (["--dataset", "digits", "--kl-warmup", "nan"], "kl_warmup must be a finite number"),
        (["--dataset", "digits", "--z-dim", "0"], "VAE sizes must be at least 1, got z_dim=0"),
        (["--dataset", "digits", "--seed", "-1"], "seed must be in [0, 2**32)"),
        (
            ["--dataset", "digits", "--sigma", "-1", "--likelihood", "gaussian"],
            "the scale must be > 0",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, args, message):
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: ") and message in err
    assert err.count("\n") == 1  # one line
    assert not (tmp_path / "r").exists()  # nothing written before the checks


@pytest.mark.parametrize("option,value", [("--likelihood", "poisson"), ("--objective", "vi")])
def test_unknown_choice_exits_2_listing_valid_names(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", option, value])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_tiny_test_split_trains_and_draws(tmp_path):
    path = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((40, 4, 4)), x_test=rng.random((2, 4, 4)))
    args = ["train", "--dataset", f"npz:{path}", "--likelihood", "gaussian", "--batch-size", "8"]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert (tmp_path / "r" / "reconstructions.png").exists()


def test_output_paths_that_are_files_exit_2(tmp_path, trained_run, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", *FAST, "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["sample", "--run", str(trained_run), "--out", str(blocker / "grid.png")]) == 2
    assert capsys.readouterr().err.startswith("pyro-vae: error: ")


def test_npz_with_nan_exits_2(tmp_path, capsys):
    path = tmp_path / "nan.npz"
    np.savez(path, x_train=np.full((10, 4), np.nan), x_test=np.zeros((2, 4)))
    assert (
        main(
            [
                "train",
                "--dataset",
                f"npz:{path}",
                "--likelihood",
                "gaussian",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "NaN or infinite" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_exits_2(tmp_path, capsys):
    assert main(["train", *FAST, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_runs(tmp_path):
    assert main(["train", *FAST, "--device", "cuda", "--out", str(tmp_path / "r")]) == 0


def test_sample_from_missing_run_exits_2(tmp_path, capsys):
    assert main(["sample", "--run", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_evaluate_writes_ordered_bounds_and_gap_decomposition(trained_run, capsys):
    args = ["evaluate", "--run", str(trained_run), "--num-samples", "200", "--ks", "1,5,50"]
    assert (
        main(
            [
                *args,
                "--gap-decomposition",
                "--gap-points",
                "8",
                "--gap-steps",
                "30",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| ELBO (= L_1) |" in out and "approximation gap" in out
    report = json.loads((trained_run / "eval.json").read_text())
    s = report["summary"]
    assert report["num_samples"] == 200 and report["ks"] == [1, 5, 50]
    assert s["elbo"]["mean"] <= s["L_5"]["mean"] <= s["L_50"]["mean"] <= s["log_px"]["mean"] + 0.05
    assert report["order_violations"] == []
    assert len(report["per_point"]["log_px"]) == report["num_points"] == 359
    assert 1 <= s["ess"]["min"] <= s["ess"]["mean"] <= 200
    assert report["gap_decomposition"]["num_points"] == 8
    assert (trained_run / "bounds.png").read_bytes()[:4] == b"\x89PNG"
    assert "| quantity | mean | std. error |" in (trained_run / "eval.md").read_text()


def test_evaluate_train_split_with_limit_matches_the_library(trained_run):
    import pyro

    from pyro_vae.evaluate import evaluate_dataset
    from pyro_vae.runs import evaluation_split, load_run, run_dataset, spread_subset

    args = ["evaluate", "--run", str(trained_run), "--num-samples", "20", "--ks", "1,5"]
    assert main([*args, "--split", "train", "--limit", "30", "--seed", "7", "--no-progress"]) == 0
    report = json.loads((trained_run / "eval_train_n30.json").read_text())
    assert report["split"] == "train" and report["num_points"] == 30
    # the same evaluation in-process: same split, subset, K and seed give the same numbers
    vae, state = load_run(trained_run)
    x = evaluation_split(run_dataset(state["config"], "run"), "train")
    pyro.set_rng_seed(7)
    ev = evaluate_dataset(
        vae.model, vae.guide, x[spread_subset(len(x), 30)], num_samples=20, ks=(1, 5)
    )
    np.testing.assert_allclose(report["per_point"]["log_px"], ev.log_px.tolist(), rtol=1e-6)
    np.testing.assert_allclose(report["per_point"]["L_5"], ev.bounds[1].tolist(), rtol=1e-6)


def test_evaluate_defaults_fit_small_k_and_json_stays_strict(trained_run):
    args = ["evaluate", "--run", str(trained_run), "--num-samples", "20", "--limit", "1"]
    assert main([*args, "--no-progress"]) == 0
    text = (trained_run / "eval_n1.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # a single image has no std. error
    report = json.loads(text)
    assert report["ks"] == [1, 5]  # the default 1,5,50,500 cut to K = 20
    assert report["summary"]["log_px"]["stderr"] is None


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num-samples", "0"], "--num-samples must be at least 1"),
        (["--num-samples", "10", "--ks", "1,50"], "--ks 50 exceeds --num-samples 10"),
    ],
)
def test_evaluate_bad_input_exits_2(trained_run, capsys, extra, message):
    assert main(["evaluate", "--run", str(trained_run), *extra]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_needs_a_run(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.parametrize(
    "likelihood,extra",
    [
        ("bernoulli", []),
        ("continuous-bernoulli", []),
        ("gaussian", ["--sigma", "0.2"]),
        ("gaussian", ["--sigma", "per-pixel"]),
        ("gaussian", ["--sigma", "predicted"]),
        ("laplace", ["--sigma", "shared"]),
        ("beta", []),
        ("discretized-logistic", []),
    ],
)
def test_every_likelihood_trains_one_epoch_on_digits(tmp_path, likelihood, extra):
    out = tmp_path / "r"
    args = ["train", "--dataset", "digits", "--likelihood", likelihood, *extra, "--epochs", "1"]
    assert (
        main([*args, "--hidden-dims", "32", "--z-dim", "2", "--out", str(out), "--no-progress"])
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert np.isfinite(results["test_elbo"])
    assert results["likelihood"]["name"] == likelihood
    if likelihood == "discretized-logistic":
        assert results["likelihood"]["levels"] == 17  # digits store 0..16
    # the saved run reloads with its likelihood, learned scales included
    from pyro_vae.runs import load_run

    vae, _ = load_run(out)
    assert vae.likelihood.config() == results["likelihood"]
