"""Nothing a run folder holds is trusted blindly: every field of ``config.json`` is
checked when read, and ``config.json`` must agree with the checkpoint's own copy of the
configuration. Every refusal is one line and exit status 2, and leaves the run's files as
they were."""

import json
from pathlib import Path

import pytest

from pyro_vae import checkpoint
from pyro_vae.cli import main
from pyro_vae.errors import UsageError
from pyro_vae.run import open_run

EVALUATE = ["--limit", "5", "--num-samples", "5", "--no-progress"]


def refused(argv, capsys) -> str:
    """Run ``pyro-vae ARGV``, which must refuse with status 2 and one line on standard
    error; returns that line."""
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured.err
    err = captured.err
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line, no traceback
    assert err.startswith("pyro-vae: error: "), err
    return err


def commands(run: Path, tmp_path: Path) -> list[list[str]]:
    """Every command that reads a run: evaluate, sample, complete and a resume."""
    return [
        ["evaluate", "--run", str(run), *EVALUATE],
        ["sample", "--run", str(run), "--out", str(tmp_path / "s.png")],
        ["complete", "--run", str(run), "--out", str(tmp_path / "c.png")],
        ["train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress"],
    ]


def files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def edit_config(run: Path, change) -> None:
    """Change ``config.json`` in place by ``change(config)``, or replace it by the text
    ``change``."""
    path = run / "config.json"
    if isinstance(change, str):
        path.write_text(change)
        return
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


# --- every field checked -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("[]", "config.json holds a list, not a run's configuration"),
        ("null", "config.json holds null, not a run's configuration"),
        ('"a run"', "config.json holds 'a run', not a run's configuration"),
        (lambda c: c["model"].update(z_dim="abc"), "model.z_dim must be an integer, got 'abc'"),
        (lambda c: c["model"].update(z_dim=True), "model.z_dim must be an integer, got true"),
        (lambda c: c["model"].update(hidden_dims="32"), "model.hidden_dims must be a list of"),
        (lambda c: c["model"].pop("x_dim"), "model has no x_dim, which the model's constructor"),
        (lambda c: c.update(model=[1, 2]), "model must be an object of settings, not a list"),
        (lambda c: c["model"].update(kind=3), "model.kind must be the name of a model, got 3"),
        (lambda c: c.update(data="digits"), "data must be an object of settings, not 'digits'"),
        (lambda c: c["data"].pop("dataset"), "config.json: data has no dataset"),
        (lambda c: c["data"].update(dequantize="no"), "data.dequantize must be true or false"),
        (lambda c: c["data"].update(binarize="often"), "data.binarize 'often' is not one of"),
        (lambda c: c["data"].update(dataset="cifar"), "data.dataset 'cifar' is not a data set"),
        (lambda c: c["train"].update(epochs="3"), "train.epochs must be an integer, got '3'"),
        (lambda c: c["train"].update(lr=None), "train.lr must be a number, got null"),
        (lambda c: c["train"].update(lr=-1), "train: lr must be a finite number > 0, got -1"),
        (lambda c: c.update(train=None), "train must be an object of settings, not null"),
        (lambda c: c.update(pyro_vae_version=2), "pyro_vae_version must be a string, got 2"),
    ],
)
def test_every_field_of_config_json_is_checked(run_copy, tmp_path, capsys, change, message):
    edit_config(run_copy, change)
    config = run_copy / "config.json"
    before = files(run_copy)
    for argv in commands(run_copy, tmp_path):
        err = refused(argv, capsys)
        assert f"pyro-vae: error: {config}" in err, argv
        assert message in err, argv
    assert files(run_copy) == before
    assert not list(tmp_path.glob("*.png"))


def test_a_model_that_does_not_fit_its_data_is_refused(run_copy):
    """A configuration that agrees with its checkpoint and builds a model, whose image
    shape is not that of the data set's images."""
    path = run_copy / "checkpoint.pt"
    state = checkpoint.load(path)
    state["config"]["model"]["image_shape"] = [4, 16]
    checkpoint.save(path, state)
    edit_config(run_copy, lambda c: c["model"].update(image_shape=[4, 16]))
    with pytest.raises(UsageError) as refusal:
        open_run(run_copy)
    message = str(refusal.value)
    assert message.startswith(f"{run_copy / 'config.json'}: model.image_shape [4, 16] does")
    assert "does not fit the images of digits, which are 8x8" in message


# --- config.json against the checkpoint's copy -------------------------------------------


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        (
            lambda c: c["model"].update(likelihood={"name": "gaussian"}),
            "model.likelihood is {'name': 'gaussian'} in config.json but {'name': "
            "'bernoulli'} in checkpoint.pt",
        ),
        (
            lambda c: c["data"].update(dataset="mnist5k"),
            "data.dataset is 'mnist5k' in config.json but 'digits' in checkpoint.pt",
        ),
        (
            lambda c: c["data"].update(binarize="static"),
            "data.binarize is 'static' in config.json but 'dynamic' in checkpoint.pt",
        ),
        (lambda c: c["train"].update(lr=0.01), "train.lr is 0.01 in config.json but 0.001 in"),
        (lambda c: c["model"].update(kind="hvae"), "model.kind is 'hvae' in config.json but"),
    ],
)
def test_config_json_must_agree_with_the_checkpoint(run_copy, tmp_path, capsys, change, shown):
    edit_config(run_copy, change)
    before = files(run_copy)
    for argv in commands(run_copy, tmp_path):
        err = refused(argv, capsys)
        config, ckpt = run_copy / "config.json", run_copy / "checkpoint.pt"
        assert f"{config} and {ckpt} disagree: {shown}" in err, argv
        assert "restore config.json (without one, the run reads the checkpoint's copy)" in err
    assert files(run_copy) == before
    # the fix the message gives: without config.json the run reads the checkpoint's copy
    (run_copy / "config.json").unlink()
    _, _, config, _ = open_run(run_copy)
    assert config.model["likelihood"] == {"name": "bernoulli"} and config.data.dataset == "digits"


def test_a_resume_killed_before_its_first_checkpoint_still_opens(run_copy, monkeypatch):
    """The resumed run wrote its new epoch count, data folder and settings that may
    change into config.json, then stopped before it saved a checkpoint."""
    import pyro_vae.cli.train as cli_train

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "fit", killed)
    args = ["train", "--out", str(run_copy), "--resume", "--epochs", "4", "--validate"]
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--data-dir", str(run_copy / "elsewhere"), "--no-progress"])
    monkeypatch.undo()
    config = json.loads((run_copy / "config.json").read_text())
    assert config["train"]["epochs"] == 4 and config["train"]["validate"] is True
    assert checkpoint.load(run_copy / "checkpoint.pt")["config"]["train"]["epochs"] == 2
    _, _, opened, _ = open_run(run_copy)
    assert opened.train.epochs == 4
    assert main(["train", "--out", str(run_copy), "--resume", "--no-progress"]) == 0
    state = checkpoint.load(run_copy / "checkpoint.pt")
    assert state["epoch"] == 4 and state["config"]["train"]["epochs"] == 4
