"""Every number `pyro-vae train` takes is held to its range (pyro_vae.limits) where it is
parsed, and the library refuses the same values from Python; nonsense that would train to
garbage (a density on binarized data, a resume that rewinds a run) is refused too. Each
refusal is exit status 2 and one line, and nothing is written."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import FAST
from test_cli_paths import refused

from pyro_vae import VAE, Beta, ContinuousBernoulli, Gaussian, Laplace, TrainConfig, fit, memory
from pyro_vae import data as data_mod
from pyro_vae.cli import main
from pyro_vae.errors import UsageError
from pyro_vae.models import MODELS, VQVAE

BIG = "99999999999999999999"  # overflows the 64-bit sizes of torch


# --- refused where they are parsed ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--z-dim", BIG], f"--z-dim: expected an integer in [1, 1048576], got {BIG}"),
        (["--z-dim", "1000000000"], "--z-dim: expected an integer in [1, 1048576]"),
        (["--hidden-dims", f"32,{BIG}"], "--hidden-dims: expected integers <= 1048576"),
        (["--model", "vqvae", "--vq-codes", BIG], "--vq-codes: expected an integer in [1, "),
        (["--model", "vqvae", "--vq-slots", BIG], "--vq-slots: expected an integer in [1, "),
        (["--model", "vqvae", "--vq-dim", BIG], "--vq-dim: expected an integer in [1, "),
        (["--model", "hvae", "--z-dims", f"4,{BIG}"], "--z-dims: expected integers <= 1048576"),
        (["--num-particles", BIG], "--num-particles: expected an integer in [1, 65536]"),
        (["--batch-size", BIG], "--batch-size: expected an integer in [1, 16777216]"),
        (["--epochs", BIG], "--epochs: expected an integer in [1, 1000000]"),
        (["--epochs", "1e20"], "--epochs: expected an integer, got '1e20'"),
        (["--guide", "iaf", "--flow-steps", BIG], "--flow-steps: expected an integer in [1, 1024]"),
        (["--lr", "1e6"], "--lr: expected a number in (0, 1], got 1e6"),
        (["--lr", "inf"], "--lr: expected a number in (0, 1], got inf"),
        (["--lr", "nan"], "--lr: expected a number in (0, 1], got nan"),
        (["--beta", "1e6"], "--beta: expected a number in (0, 1000], got 1e6"),
        (["--kl-warmup", "1e308"], "--kl-warmup: expected a number in [0, 1e+06], got 1e308"),
        (["--kl-warmup", "1e300"], "--kl-warmup: expected a number in [0, 1e+06], got 1e300"),
        (["--kl-warmup", "inf"], "--kl-warmup: expected a number in [0, 1e+06], got inf"),
        (["--likelihood", "gaussian", "--sigma", "1e20"], "--sigma: expected a number in [0.0001"),
        (["--likelihood", "gaussian", "--sigma", "1e-30"], "--sigma: expected a number in [0.0"),
        (["--likelihood", "laplace", "--sigma", "inf"], "--sigma: expected a number in [0.0001"),
        (["--model", "vqvae", "--vq-commitment", "1e20"], "--vq-commitment: expected a number in"),
        (["--model", "vqvae", "--vq-commitment", "inf"], "--vq-commitment: expected a number in"),
        (["--data-dir", ""], "argument --data-dir: expected a path, got ''"),
    ],
)
def test_a_number_out_of_range_is_refused_where_it_is_parsed(tmp_path, capsys, options, message):
    out = tmp_path / "run"
    err = refused(["train", *FAST, *options, "--out", str(out)], capsys)
    assert err.startswith("pyro-vae train: error: argument --") and message in err
    assert not out.exists()


@pytest.mark.parametrize("out", ["", " "])
def test_an_empty_out_is_refused_and_nothing_lands_in_the_current_folder(
    tmp_path, capsys, monkeypatch, out
):
    monkeypatch.chdir(tmp_path)
    err = refused(["train", *FAST, "--out", out], capsys)
    assert f"argument --out: expected a path, got {out!r}; name the folder, or ." in err
    assert not list(tmp_path.iterdir())


# --- refused by the library, on the command line and from Python --------------------


def test_sizes_that_cannot_be_allocated_are_refused_with_the_memory_they_need(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *FAST[:4], "--out", str(out)]
    err = refused([*args, "--z-dim", "1048576", "--hidden-dims", "1048576"], capsys)
    assert "the network 64-1048576-2097152 needs 8,796.4 GB for 2,199,093,510,144 numbers" in err
    assert "of memory free; use smaller --hidden-dims or latent sizes" in err
    err = refused([*args, "--guide", "iaf", "--z-dim", "200000", "--hidden-dims", "8"], capsys)
    assert "the flow of 2 steps on 200000 latent dimensions needs 10,240.0 GB" in err
    assert "use fewer --flow-steps or a smaller --z-dim" in err
    vq = [*args, "--model", "vqvae", "--vq-codes", "1048576", "--vq-dim", "1048576"]
    err = refused(vq, capsys)
    assert "the codebook of 1048576 codes of 1048576 numbers needs 4,398.1 GB" in err
    assert not out.exists()
    with pytest.raises(UsageError, match=r"the network 64-1048576-2097152 needs .* GB"):
        VAE(64, z_dim=2**20, hidden_dims=[2**20])


def test_the_memory_check_counts_what_training_adds(monkeypatch, toy_binary):
    """Weights that fit, but not with their gradients and Adam's two moments, are
    refused by fit before it trains; so is a step whose particles do not fit."""
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    weights = sum(p.numel() for p in vae.parameters())  # 1,684: 6,736 bytes
    monkeypatch.setattr(memory, "CHECK_FROM_BYTES", 0)
    monkeypatch.setattr(memory, "free_bytes", lambda: 2 * 4 * weights)
    VAE(16, z_dim=2, hidden_dims=(32,))  # the networks alone fit
    config = TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(UsageError, match=rf"training the {weights:,} parameters \(their grad"):
        fit(vae, toy_binary[0], config=config, progress=False)
    monkeypatch.setattr(memory, "free_bytes", lambda: 10**6)
    with pytest.raises(UsageError, match=r"num_particles or a smaller batch_size$"):
        fit(vae, toy_binary[0], config=TrainConfig(epochs=1, num_particles=10**4), progress=False)
    with pytest.raises(UsageError, match=r"the network 784-400-40 needs 1 MB .* free; use small"):
        VAE(784)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": 1e6}, r"^lr must be a finite number in \(0, 1\], got 1000000.0$"),
        ({"lr": math.inf}, r"^lr must be a finite number in \(0, 1\]"),
        ({"lr": math.nan}, r"^lr must be a finite number in \(0, 1\]"),
        ({"beta": 1e6}, r"^beta must be a finite number in \(0, 1000\]"),
        ({"kl_warmup": 1e308}, r"^kl_warmup must be a finite number of epochs in \[0, 1e\+06\]"),
        ({"kl_warmup": -1.0}, r"^kl_warmup must be a finite number of epochs"),
        ({"epochs": 10**20}, r"^epochs must be at most 1000000 \(pyro_vae.limits\)"),
        ({"epochs": 1e20}, r"^epochs must be an integer of at least 1, got 1e\+20$"),
        ({"epochs": 2.5}, r"^epochs must be an integer of at least 1, got 2.5$"),
        ({"batch_size": 2**30}, r"^batch_size must be at most 16777216"),
        ({"num_particles": 10**20}, r"^num_particles must be at most 65536"),
        ({"eval_batch_size": 0}, r"^eval_batch_size must be an integer of at least 1, got 0$"),
    ],
)
def test_train_config_holds_every_setting_to_its_range(settings, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**settings).check()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: VAE(64, z_dim=10**20), r"VAE sizes must be at most 1048576 \(2\*\*20"),
        (lambda: VAE(64, hidden_dims=[32, 10**9]), r"got hidden_dims=1000000000; use smaller"),
        (lambda: VQVAE(64, codes=10**20), "VQVAE sizes must be at most 1048576"),
        (lambda: VQVAE(64, commitment=1e20), r"weights must be finite numbers in \[0, 1000\]"),
        (lambda: VQVAE(64, commitment=math.inf), r"weights must be finite numbers in \[0, 1000"),
        (lambda: VQVAE(64, codebook_weight=math.nan), r"weights must be finite numbers in \[0, "),
        (lambda: VQVAE(64, ema_decay=1.0), r"the moving-average decay must be in \(0, 1\)"),
        (lambda: VQVAE(64, ema_decay=math.nan), r"the moving-average decay must be in \(0, 1\)"),
        (lambda: VQVAE(64, temperature=math.inf), "the proposal's temperature must be > 0"),
    ],
)
def test_model_constructors_refuse_sizes_and_weights_out_of_range(build, message):
    with pytest.raises(UsageError, match=message):
        build()


# --- continuous likelihoods on binarized data -----------------------------------------


@pytest.mark.parametrize(
    ("options", "likelihood"),
    [
        (["--likelihood", "beta", "--binarize", "static"], "beta"),
        (["--likelihood", "gaussian", "--binarize", "dynamic"], "gaussian"),
        (["--model", "vqvae", "--binarize", "static"], "gaussian"),  # vqvae's default
        (["--likelihood", "continuous-bernoulli", "--binarize", "static"], "continuous-bern"),
    ],
)
def test_a_density_on_binarized_data_is_refused(tmp_path, capsys, options, likelihood):
    out = tmp_path / "run"
    err = refused(["train", *FAST[:6], *options, "--out", str(out)], capsys)  # no --z-dim
    assert f"the {likelihood}" in err and "holds only 0s and 1s (binarized data)" in err
    assert "Use --likelihood bernoulli for binary data, or train on the grey levels " in err
    assert err.rstrip().endswith("(--binarize none)")
    assert not out.exists()


def test_the_library_refuses_a_density_on_binary_data(toy_binary):
    train, test = toy_binary  # 0s and 1s
    vae = VAE(16, z_dim=2, hidden_dims=(8,), likelihood=Gaussian(0.1))
    with pytest.raises(UsageError, match=r"holds only 0s and 1s .* Use likelihood bernoulli"):
        fit(vae, train, test, config=TrainConfig(epochs=1, batch_size=32), progress=False)
    for density in (Gaussian(0.1), Laplace(0.1), Beta(), ContinuousBernoulli()):
        with pytest.raises(UsageError, match=f"the {density.name} likelihood is a density"):
            density.check_data(torch.tensor([[0.0, 1.0, 1.0]]))
        density.check_data(torch.tensor([[0.0, 1.0, 0.5]]))  # grey levels are its data


# --- data -----------------------------------------------------------------------------


def test_npz_splits_of_different_image_shapes_are_refused(tmp_path, capsys):
    path = tmp_path / "odd.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((40, 8, 8)), x_test=rng.random((10, 4, 16)))
    with pytest.raises(UsageError, match=r"x_train holds points of shape \(8, 8\) but x_test"):
        data_mod.load(f"npz:{path}")
    out = tmp_path / "run"
    argv = ["train", "--dataset", f"npz:{path}", "--likelihood", "gaussian", "--out", str(out)]
    assert "of shape (4, 16); store both splits with the same shape" in refused(argv, capsys)
    assert not out.exists()


def test_an_empty_data_dir_is_refused_by_the_library():
    with pytest.raises(UsageError, match=r"^data_dir is empty, which would name the current"):
        data_mod.load("digits", data_dir="")


# --- the launcher's environment -------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "x"}, "the environment variable RANK='x' is not an integer"),
        ({"LOCAL_RANK": "one"}, "the environment variable LOCAL_RANK='one' is not an integer"),
        ({"WORLD_SIZE": "0"}, "the environment variable WORLD_SIZE=0 must be at least 1"),
        ({"RANK": "-1"}, "the environment variable RANK=-1 must be at least 0"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not below WORLD_SIZE=2; ranks count from"),
        ({"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "1"}, "LOCAL_RANK=1 is not below LOCAL_WORLD"),
    ],
)
def test_launch_variables_that_are_no_ranks_exit_2(tmp_path, capsys, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    err = refused(["train", *FAST, "--out", str(out)], capsys)
    assert message in err
    assert not out.exists()


# --- resuming -------------------------------------------------------------------------


def test_resume_with_fewer_epochs_than_trained_is_refused_and_rewrites_nothing(run_copy, capsys):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    err = refused(["train", "--out", str(run_copy), "--resume", "--epochs", "1"], capsys)
    assert f"--epochs 1: the run in {run_copy} has already trained 2 epochs; pass --epochs" in err
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


#: a value other than the default for every option of every registered model, grouped
#: into commands per model (options of different prior families go in different ones);
#: the command that trained a run resumes it
NON_DEFAULT = {
    "vae": "--z-dim 3 --hidden-dims 16,8 --likelihood gaussian --sigma 0.5 --network conv "
    "--guide iaf --flow-steps 3",
    "vae-vamp": "--z-dim 3 --hidden-dims 8 --network conv --guide full-covariance --prior "
    "vamp --prior-components 3 --prior-init data",
    "vae-flow": "--z-dim 2 --hidden-dims 8 --prior flow --prior-flow-steps 2",
    "cvae": "--task quadrants-2 --prior learned --z-dim 3 --hidden-dims 16 --likelihood "
    "laplace --sigma per-pixel --network conv --guide iaf --flow-steps 1",
    "regressor": "--task quadrants-2 --hidden-dims 16,8 --likelihood gaussian --sigma shared",
    "hvae": "--z-dims 4,2 --hidden-dims 16,8 --likelihood laplace --sigma 0.3 --network conv",
    "hvae-vamp": "--z-dims 3,2 --hidden-dims 8,8 --prior vamp --prior-components 2 "
    "--prior-init data",
    "hvae-flow": "--z-dims 3,2 --hidden-dims 8,8 --prior flow --prior-flow-steps 2",
    "vqvae": "--vq-codes 5 --vq-slots 2 --vq-dim 3 --vq-select distance --vq-commitment 0.6 "
    "--vq-ema 0.99 --hidden-dims 16 --likelihood laplace --sigma predicted --network conv",
    "ssvae": "--labels 20 --alpha 5 --label-seed 3 --z-dim 3 --hidden-dims 16 --likelihood "
    "gaussian --sigma 0.3 --network conv --guide full-covariance",
}


def test_every_model_option_has_a_non_default_value_to_resume_with():
    from pyro_vae.cli import build_parser

    parser = build_parser()
    assert {name.split("-")[0] for name in NON_DEFAULT} == set(MODELS)
    for kind, cls in MODELS.items():
        commands = [v.split() for k, v in NON_DEFAULT.items() if k.split("-")[0] == kind]
        given = {w: v for words in commands for w, v in zip(words[::2], words[1::2], strict=True)}
        assert set(given) == {o.flag for o in cls.options}, kind
        parsed = [parser.parse_args(["train", "--model", kind, *words]) for words in commands]
        for option in cls.options:
            assert any(
                getattr(args, option.dest) not in (None, option.default) for args in parsed
            ), option.flag


@pytest.mark.parametrize("kind", list(NON_DEFAULT))
def test_the_command_that_trained_a_run_resumes_it(few_digits, tmp_path, capsys, kind):
    out = tmp_path / "run"
    options = NON_DEFAULT[kind].split()
    kind = kind.split("-")[0]
    argv = ["train", *few_digits, "--model", kind, *options, "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert main([*argv, "--resume", "--epochs", "2"]) == 0, capsys.readouterr().err
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2]
    capsys.readouterr()
    changed = {
        "vae": "--z-dim 4",
        "cvae": "--prior fixed",
        "regressor": "--sigma per-pixel",
        "ssvae": "--labels 30",
    }
    other = changed.get(kind, "--vq-ema 0.9" if kind == "vqvae" else "--z-dims 5,2").split()
    err = refused([*argv, *other, "--resume"], capsys)
    assert f"cannot resume {out} with different settings: {other[0]} {other[1]} (run has " in err


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory) -> list[str]:
    """Options of a one-epoch run on 128 training and 32 test digits, with their classes
    (an npz file)."""
    digits = data_mod.load("digits")
    path = tmp_path_factory.mktemp("few") / "digits.npz"
    x_train, x_test = (t.reshape(-1, 8, 8).numpy() for t in (digits.x_train, digits.x_test))
    y_train, y_test = digits.y_train.numpy()[:128], digits.y_test.numpy()[:32]
    np.savez(path, x_train=x_train[:128], x_test=x_test[:32], y_train=y_train, y_test=y_test)
    return ["--dataset", f"npz:{path}", "--epochs", "1", "--no-progress"]
