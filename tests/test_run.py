"""The run folder: one config as the single source, named paths, ``open``, and folders
written by pyro_vae 0.1."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pyro_vae import CVAE, VAE, Regressor, TrainConfig, checkpoint, staging
from pyro_vae.cli import main
from pyro_vae.errors import UsageError
from pyro_vae.run import DataConfig, RunConfig, RunFolder, open_run, resumable

FIXTURES = Path(__file__).parent / "fixtures" / "runs_v0_1"


@pytest.fixture
def old_runs(tmp_path):
    """Copies of run folders written by pyro_vae 0.1 (config.json without a format, the
    conditional task kept with the data)."""
    shutil.copytree(FIXTURES, tmp_path / "old")
    return tmp_path / "old"


def test_run_config_round_trips_through_plain_data():
    config = RunConfig(
        DataConfig("digits", binarize="static"),
        VAE(64, z_dim=3).config(),
        TrainConfig(epochs=7, objective="iwae", num_particles=5),
    )
    d = json.loads(json.dumps(config.to_dict()))
    assert d["format"] == "pyro_vae.run/2"
    assert RunConfig.from_dict(d) == config


@pytest.mark.parametrize(
    "change,message",
    [
        ({"format": "pyro_vae.run/9"}, "format 'pyro_vae.run/9', which this version"),
        ({"train": {"epochs": 3, "warp": 1}}, "train has settings this version of pyro_vae"),
        ({"data": None}, "records no data set"),
    ],
)
def test_unreadable_configs_are_refused_with_the_fix(change, message):
    d = RunConfig(DataConfig(), VAE(4).config(), TrainConfig()).to_dict()
    d.update(change)
    if d["data"] is None:
        del d["data"]
    with pytest.raises(UsageError, match=message):
        RunConfig.from_dict(d, "config.json")


def test_what_may_change_on_resume_is_declared_once():
    assert resumable(TrainConfig) == {"epochs", "validate", "eval_batch_size"}
    assert resumable(DataConfig) == {"data_dir"}


def test_open_returns_the_trained_model_its_data_and_config(digits_run):
    model, data, config, folder = open_run(digits_run)
    assert isinstance(model, VAE) and not model.training
    assert data.name == "digits" and data.binarize == "dynamic"
    assert config.model == model.config() and config.train.epochs == 2
    assert folder.checkpoint == digits_run / "checkpoint.pt"
    state = checkpoint.load(folder.checkpoint)
    for key, value in state["model_state"].items():
        assert torch.equal(model.state_dict()[key], value)
    # config.json and the checkpoint hold one configuration
    assert state["config"] == json.loads(folder.config.read_text())


def test_run_folder_names_every_file(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.evaluation("test", None)[0].name == "eval.json"
    assert [p.name for p in folder.evaluation("train", 30)] == [
        "eval_train_n30.json",
        "eval_train_n30.md",
        "bounds_train_n30.png",
    ]
    assert folder.completions("test", None).name == "completions_test.png"
    assert folder.completions("train", 2).name == "completions_train_n2.png"
    stale = ("config.json", "eval_n5.md", "bounds.png", "samples.png", "completions.png")
    stale += ("prior_samples_64.png", "completions_train_n2.png", "bounds_train_n30.png")
    mine = ("notes.txt", "poster.png", "evaluation_notes.md")  # a user's files stay
    for name in stale + mine:
        (tmp_path / name).write_text("x")
    (staging.stage(tmp_path) / "checkpoint.pt").write_text("new")
    assert staging.promote(tmp_path, folder.STALE) == ["checkpoint.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, "checkpoint.pt"])


def test_a_runs_figures_follow_what_its_model_can_draw():
    from pyro_vae.data import load
    from pyro_vae.plots import TRAINING_FIGURES, training_figures
    from pyro_vae.train import History

    dataset = load("digits", binarize="static")
    history = History()
    history.append(epoch=1, train_objective=-50.0, test_elbo=-51.0, kl_weight=1.0, seconds=1.0)
    expected = {
        "loss.png samples.png reconstructions.png": VAE(64, z_dim=2, image_shape=(8, 8)),
        "loss.png": VAE(64, z_dim=2),  # not images: nothing to draw but the curves
        "loss.png completions.png": CVAE(32, 32, task="quadrants-2"),
    }
    for names, model in expected.items():
        drawn = training_figures(model.eval(), dataset, history, seed=0)
        assert sorted(drawn) == sorted(names.split()) and set(drawn) <= set(TRAINING_FIGURES)
    assert sorted(training_figures(Regressor(10, 64, task="label"), dataset, history, 0)) == [
        "completions.png",
        "loss.png",
    ]


@pytest.mark.parametrize("kind,cls", [("vae", VAE), ("cvae", CVAE), ("regressor", Regressor)])
def test_runs_of_version_0_1_open_as_they_are(old_runs, kind, cls):
    model, data, config, _ = open_run(old_runs / kind)
    assert type(model) is cls and config.pyro_vae_version == "0.1.0"
    if kind != "vae":  # the task moved from the data into the model
        expected = {"cvae": "quadrants-2", "regressor": "center-column"}[kind]
        assert model.task == config.model["task"] == expected
    # the weights are the ones 0.1 saved: its recorded test ELBO comes back
    stored = json.loads((old_runs / kind / "results.json").read_text())["test_elbo"]
    from pyro_vae.evaluate import mean_elbo

    torch.manual_seed(0)
    test = model.training_data(data).test
    elbo = mean_elbo(model.model, model.guide, test, num_particles=10)
    assert elbo == pytest.approx(stored, abs=1e-4 if kind == "regressor" else 0.3)


def test_commands_work_on_runs_of_version_0_1(old_runs):
    assert main(["sample", "--run", str(old_runs / "vae"), "-n", "4"]) == 0
    assert main(["complete", "--run", str(old_runs / "cvae"), "-n", "2", "--inputs", "3"]) == 0
    for kind in ("vae", "cvae", "regressor"):
        args = ["evaluate", "--run", str(old_runs / kind), "--num-samples", "20"]
        assert main([*args, "--limit", "10", "--no-progress"]) == 0
    # resuming rewrites config.json in the current format
    args = ["train", "--out", str(old_runs / "cvae"), "--resume", "--epochs", "2"]
    assert main([*args, "--no-progress"]) == 0
    config = json.loads((old_runs / "cvae" / "config.json").read_text())
    assert config["format"] == "pyro_vae.run/2" and config["model"]["task"] == "quadrants-2"
    assert config["train"]["epochs"] == 2 and "task" not in config["data"]
