import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FAST as CONFTEST_FAST

from pyro_vae import checkpoint
from pyro_vae.cli import main

FAST = [*CONFTEST_FAST, "--no-progress"]


def test_train_writes_every_promised_output(digits_run, tmp_path):
    names = {p.name for p in digits_run.iterdir()}
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
    config = json.loads((digits_run / "config.json").read_text())
    assert config["data"]["dataset"] == "digits" and config["data"]["binarize"] == "dynamic"
    from pathlib import Path

    assert config["data"]["data_dir"] == str(
        Path("data").resolve()
    )  # absolute: usable from anywhere
    assert config["model"]["z_dim"] == 2 and config["model"]["hidden_dims"] == [32]
    history = json.loads((digits_run / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    results = json.loads((digits_run / "results.json").read_text())
    # 64 pixels: a Bernoulli ELBO lies between -64 log 2 (coin flips) and 0
    assert -64 * np.log(2) - 5 < results["test_elbo"] < 0
    assert "| test |" in (digits_run / "results.md").read_text()
    # the figures show the run: its curves, and its model's samples and reconstructions
    from pictures import assert_axes_match

    from pyro_vae import data as data_mod
    from pyro_vae import plots
    from pyro_vae.run import load_model
    from pyro_vae.splits import spread_subset
    from pyro_vae.train import History

    curves = plots.history_figure(History.from_dict(history))
    assert_axes_match(digits_run / "loss.png", curves, tmp_path)
    model = load_model(digits_run)
    drawn = model.sample(64, generator=torch.Generator().manual_seed(config["train"]["seed"]))
    samples = plots.grid_figure(drawn, (8, 8), "64 samples: the prior's z, mean of P(x|z)")
    assert_axes_match(digits_run / "samples.png", samples, tmp_path)
    x_test = data_mod.load("digits", binarize="dynamic").x_test
    x = x_test[spread_subset(len(x_test), 32)]
    title = "test images (odd rows) and reconstructions (even rows)"
    pairs = plots.reconstruction_figure(x, model.reconstruct(x), (8, 8), title)
    assert_axes_match(digits_run / "reconstructions.png", pairs, tmp_path)


@pytest.mark.slow
def test_python_m_pyro_vae_is_the_command(digits_run, tmp_path):
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyro_vae",
            "sample",
            "--run",
            str(digits_run),
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
    from pictures import assert_axes_match

    from pyro_vae.plots import grid_figure
    from pyro_vae.run import load_model

    model = load_model(digits_run)
    drawn = model.sample(9, generator=torch.Generator().manual_seed(0))  # the default seed
    figure = grid_figure(drawn, (8, 8), "9 samples from the prior (seed 0)")
    assert_axes_match(out, figure, tmp_path)


def test_resume_continues_rewrites_the_config_and_refuses_other_settings(run_copy, capsys):
    run = run_copy
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    # config.json, the checkpoint and results.json agree on the new epoch count
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 3
    assert checkpoint.load(run / "checkpoint.pt")["config"] == config
    assert json.loads((run / "results.json").read_text())["epochs"] == 3
    assert main(["train", "--out", str(run), "--resume", "--z-dim", "5"]) == 2
    assert "--z-dim 5 (run has 2)" in capsys.readouterr().err
    # the same value as the run's is not a change
    assert main(["train", "--out", str(run), "--resume", "--z-dim", "2", "--no-progress"]) == 0


def test_same_seed_same_run(tmp_path):
    for name in ("a", "b"):
        assert main(["train", *FAST, "--seed", "3", "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / "history.json").read_text()) for n in ("a", "b"))
    assert a["train_objective"] == b["train_objective"] and a["test_elbo"] == b["test_elbo"]
    assert main(["train", *FAST, "--seed", "4", "--out", str(tmp_path / "c")]) == 0
    c = json.loads((tmp_path / "c" / "history.json").read_text())
    assert c["train_objective"] != a["train_objective"]


def test_existing_run_is_not_overwritten_silently(digits_run, capsys):
    assert main(["train", *FAST, "--out", str(digits_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "cifar"], "valid names: mnist5k, digits, mnist, fashion-mnist, npz:PATH"),
        (["--dataset", "digits", "--binarize", "none"], "set --binarize to static or dynamic"),
        (["--dataset", "digits", "--batch-size", "5000"], "larger than the training split"),
        (["--dataset", "digits", "--objective", "iwae", "--beta", "2"], "no separate KL term"),
        # --sigma belongs to the gaussian and laplace likelihoods: refused up front, not
        # ignored in training and refused on --resume
        (["--dataset", "digits", "--sigma", "0.2"], "the bernoulli likelihood has none"),
        # --dequantize alone names the likelihood it conflicts with, not a --binarize
        # the user never gave
        (["--dataset", "digits", "--dequantize"], "the bernoulli likelihood models discrete"),
        (["--dataset", "digits", "--task", "label"], "--task applies to --model cvae or regressor"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, args, message):
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: ") and message in err
    assert err.count("\n") == 1  # one line
    assert not (tmp_path / "r").exists()  # nothing written before the checks


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["train", "--objective", "vi"], "invalid choice: 'vi'"),
        (["train", "--seed", "-1"], "a seed must lie in [0, 2**32), got -1"),
        (["train", "--epochs", "0"], "expected an integer in [1, 1000000], got 0"),
        (["train", "--lr", "0"], "argument --lr: expected a number in (0, 1], got 0"),
        (["train", "--kl-warmup", "nan"], "--kl-warmup: expected a number in [0, 1e+06], got nan"),
        (["train", "--z-dim", "0"], "--z-dim: expected an integer in [1, 1048576], got 0"),
        (["train", "--sigma", "-1"], "--sigma: expected a number in [0.0001, 10000] or one of"),
        (["sample", "--run", "r", "--seed", "99999999999999999999999"], "a seed must lie in"),
        (["complete", "--run", "r", "--seed", "99999999999999999999999"], "a seed must lie in"),
        (["evaluate", "--run", "r", "--seed", "4294967296"], "a seed must lie in"),
        (["sample", "--run", "r", "-n", "0"], "expected an integer >= 1, got 0"),
        (["evaluate", "--run", "r", "--num-samples", "x"], "expected an integer, got 'x'"),
    ],
)
def test_out_of_range_arguments_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith(f"pyro-vae {argv[0]}: ")


def test_tiny_test_split_trains_and_draws(tmp_path):
    path = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((40, 4, 4)), x_test=rng.random((2, 4, 4)))
    args = ["train", "--dataset", f"npz:{path}", "--likelihood", "gaussian", "--batch-size", "8"]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert (tmp_path / "r" / "reconstructions.png").exists()


def test_output_paths_that_are_files_exit_2(tmp_path, digits_run, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", *FAST, "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["sample", "--run", str(digits_run), "--out", str(blocker / "grid.png")]) == 2
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
    assert "no run in" in capsys.readouterr().err


@pytest.mark.slow
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
    from pyro_vae.run import open_run

    vae = open_run(out).model
    assert vae.likelihood.config() == results["likelihood"]


def test_a_diverged_run_exits_1_and_keeps_no_bad_checkpoint(tmp_path, capsys, monkeypatch):
    """A scale of 1e-30 squares to 0 in float32: the first epoch's objective is infinite.
    No --sigma may be that small, so the likelihood is made to use it behind its back."""
    from pyro_vae.likelihoods import Gaussian

    monkeypatch.setattr(Gaussian, "loc_scale", lambda self, out: (out, 1e-30))
    args = ["train", "--dataset", "digits", "--likelihood", "gaussian"]
    with pytest.warns(UserWarning, match="Encountered NaN: loss"):  # Pyro's, at every step
        status = main([*args, "--epochs", "2", "--no-progress", "--out", str(tmp_path / "r")])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: training diverged in epoch 1: the training objective")
    assert "no checkpoint was written" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "options,config",
    [
        (["--engine", "svi"], {"engine": "svi"}),
        (
            ["--objective", "iwae", "--num-particles", "3"],
            {"objective": "iwae", "num_particles": 3},
        ),
    ],
)
def test_engine_and_objective_options_reach_fit(tmp_path, options, config):
    """The command line trains exactly what the library trains with the same settings."""
    import pyro

    from pyro_vae import VAE, TrainConfig, fit
    from pyro_vae.run import DataConfig

    run = tmp_path / "r"
    assert main(["train", *FAST, *options, "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["train"]
    assert {k: stored[k] for k in config} == config
    dataset = DataConfig("digits", binarize="dynamic").load()
    pyro.set_rng_seed(0)
    vae = VAE(64, z_dim=2, hidden_dims=(32,), image_shape=(8, 8))
    data = vae.training_data(dataset)
    train_config = TrainConfig(epochs=2, **config)
    history = fit(
        vae,
        data.train,
        data.test,
        config=train_config,
        batch_transform=data.transforms,
        progress=False,
    )
    cli_history = json.loads((run / "history.json").read_text())
    assert cli_history["train_objective"] == pytest.approx(history.train_objective, rel=1e-6)
    assert cli_history["test_elbo"] == pytest.approx(history.test_elbo, rel=1e-6)


def test_resume_records_data_dir_as_an_absolute_path(run_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--out", str(run_copy), "--resume", "--epochs", "3", "--no-progress"]
    assert main([*args, "--data-dir", "elsewhere"]) == 0
    config = json.loads((run_copy / "config.json").read_text())
    assert config["data"]["data_dir"] == str(tmp_path / "elsewhere")


def test_sample_reads_no_data_and_draws_the_models_prior(run_copy, monkeypatch, tmp_path):
    from pictures import assert_axes_match

    from pyro_vae import plots
    from pyro_vae import run as run_mod

    def no_data(self):
        raise AssertionError("sample loaded the data set")

    monkeypatch.setattr(run_mod.DataConfig, "load", no_data)
    assert main(["sample", "--run", str(run_copy), "-n", "3", "--seed", "5"]) == 0
    # the same draw from Python: decoded means of z ~ N(0, I) under the seeded generator
    model = run_mod.load_model(run_copy)
    with torch.no_grad():
        z = torch.randn(3, model.z_dim, generator=torch.Generator().manual_seed(5))
        expected = model.likelihood.mean(model.decoder(z))
        drawn = model.sample(3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(drawn, expected)
    # and the picture shows exactly those means, drawn as the command draws a grid
    figure = plots.grid_figure(drawn, model.image_shape, "3 samples from the prior (seed 5)")
    assert_axes_match(run_copy / "prior_samples_3.png", figure, tmp_path)


@pytest.mark.parametrize(
    ("given", "start"),
    [
        ({}, "mnist5k-vae-"),
        ({"model": "vae", "likelihood": "gaussian", "dataset": "digits"}, "digits-vae-gaussian-"),
        ({"guide": "iaf", "likelihood": "bernoulli"}, "mnist5k-vae-iaf-"),
        (
            {"model": "cvae", "task": "quadrants-2", "prior": "learned"},
            "mnist5k-cvae-quadrants-2-learned-",
        ),
        ({"model": "regressor", "task": "label"}, "mnist5k-regressor-label-"),
    ],
)
def test_default_run_folder_names_the_models_choices(given, start):
    from pyro_vae.cli.train import default_run_name

    name = default_run_name(given)
    assert name.startswith(start) and len(name) == len(start) + len("20261202-064000")
