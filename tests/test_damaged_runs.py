"""Nothing a run folder holds is trusted blindly: a checkpoint carries the checksum of its
contents and finite weights, every field of ``config.json`` and of the checkpoint is
checked when read, ``config.json`` must agree with the checkpoint's own copy, a write
killed mid-way leaves a temporary file that the next start removes, and a full disk
keeps the previous checkpoint. Every refusal is one line and exit status 2, and leaves
the run's files as they were."""

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae import VAE, TrainConfig, checkpoint, fit
from pyro_vae.cli import main
from pyro_vae.errors import TrainingDiverged, UsageError, WriteFailed
from pyro_vae.io import leftovers, remove_leftovers
from pyro_vae.run import load_model, open_run

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


def reseal(path: Path, change) -> None:
    """Apply ``change`` to the checkpoint at ``path`` and write it back with a checksum
    that matches, as a program other than :func:`checkpoint.save` might."""
    state = checkpoint.load(path)
    change(state)
    inner = io.BytesIO()
    torch.save(state, inner)
    payload = inner.getvalue()
    sealed = {
        "format": checkpoint.FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": payload,
    }
    torch.save(sealed, path)


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


# --- checksums ---------------------------------------------------------------------------


def test_a_checkpoint_changed_on_disk_fails_its_checksum(run_copy, tmp_path, capsys):
    path = run_copy / "checkpoint.pt"
    weight = checkpoint.load(path)["model_state"]["decoder.2.weight"]
    raw = path.read_bytes()
    old = weight.numpy().tobytes()
    assert raw.count(old) == 1  # the weight's bytes lie in the file as they are
    # finite values, so that only the checksum can tell: 1e3 times the weights
    changed = raw.replace(old, (weight * 1e3).numpy().tobytes())
    assert len(changed) == len(raw) and changed != raw
    path.write_bytes(changed)
    before = files(run_copy)
    for argv in commands(run_copy, tmp_path):
        err = refused(argv, capsys)
        assert f"{path} is damaged: its contents do not match the SHA-256 checksum" in err
        assert "restore the file, or train the run again" in err
    assert files(run_copy) == before  # nothing was written, nothing removed
    with pytest.raises(UsageError, match="is damaged"):
        checkpoint.load(path)


def test_checkpoints_of_format_1_still_open_without_a_checksum(run_copy):
    path = run_copy / "checkpoint.pt"
    state = checkpoint.load(path)
    torch.save({**state, "format": checkpoint.FORMAT_1}, path)  # as pyro_vae 0.2 wrote
    model, _, _, _ = open_run(run_copy)
    for key, value in state["model_state"].items():
        assert torch.equal(model.state_dict()[key], value)


# --- finite weights ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(run_copy, tmp_path, capsys, value):
    path = run_copy / "checkpoint.pt"
    reseal(path, lambda state: state["model_state"]["decoder.0.bias"].__setitem__(3, value))
    before = files(run_copy)
    for argv in commands(run_copy, tmp_path):
        err = refused(argv, capsys)
        assert f"{path} holds unusable weights: the model's decoder.0.bias has NaN or " in err
    assert files(run_copy) == before
    for read in (open_run, load_model):
        with pytest.raises(UsageError, match=r"decoder\.0\.bias has NaN or infinite values"):
            read(run_copy)


def test_save_never_writes_non_finite_weights(digits_run, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes((digits_run / "checkpoint.pt").read_bytes())
    before = path.read_bytes()
    state = checkpoint.load(path)
    state["model_state"]["encoder.net.0.weight"][0, 0] = float("inf")
    with pytest.raises(UsageError, match=r"refusing to write .*encoder\.net\.0\.weight holds"):
        checkpoint.save(path, state)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_buffer_gone_non_finite_stops_training_before_the_checkpoint(toy_binary, tmp_path):
    """The parameters stay finite, so only the check of everything saved sees it."""
    train, test = toy_binary
    vae = VAE(16, z_dim=2, hidden_dims=(32,))
    vae.register_buffer("counts", torch.zeros(3))
    path = tmp_path / "ckpt.pt"
    calls = {"n": 0}

    def poison_in_epoch_2(x):  # 6 steps per epoch: call 8 is in epoch 2
        calls["n"] += 1
        if calls["n"] == 8:
            vae.counts.fill_(float("nan"))
        return x

    config = TrainConfig(epochs=3, batch_size=32)
    with pytest.raises(TrainingDiverged, match=r"epoch 2: the model's counts became non-finite"):
        fit(vae, train, test, config=config, batch_transform=poison_in_epoch_2,
            checkpoint=path, progress=False)  # fmt: skip
    saved = checkpoint.load(path)
    assert saved["epoch"] == 1 and torch.equal(saved["model_state"]["counts"], torch.zeros(3))


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
        (lambda c: c["train"].update(lr=-1), "train: lr must be a finite number in (0, 1], got -1"),
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


def _set(key, value):
    def change(state):
        state[key] = value

    return change


def _pop(key):
    return lambda state: state.pop(key)


#: checked by checkpoint.load itself ("file"), or where a run is read ("run": the blocks
#: that pyro_vae.run and fit() give meaning to)
@pytest.mark.parametrize(
    ("change", "message", "level"),
    [
        (_pop("model_state"), "its model_state is missing, not a dict", "file"),
        (_pop("optimizer_state"), "its optimizer_state is missing, not a dict", "file"),
        (_set("optimizer_state", [1]), "its optimizer_state is a list, not a dict", "file"),
        (_pop("config"), "its config is missing, not a dict", "file"),
        (_set("epoch", "2"), "its epoch is '2', not a count of epochs", "file"),
        (_set("epoch", -1), "its epoch is -1, not a count of epochs", "file"),
        (_set("epoch", 2.0), "its epoch is 2.0, not a count of epochs", "file"),
        (_set("epoch", 3), "its history.epoch records 2 epochs, its epoch is 3", "file"),
        (_set("history", [1, 2]), "its history is a list, not a dict", "file"),
        (
            lambda s: s["history"]["test_elbo"].append(1.0),
            "its history.test_elbo records 3 epochs, its epoch is 2",
            "file",
        ),
        (
            lambda s: s["history"].update(epoch=["1", "2"]),
            "its history.epoch is not a list of numbers",
            "file",
        ),
        (_set("rng", {"torch": 1}), "its rng is not a set of random number generator", "file"),
        (
            lambda s: s["model_state"].update(extra=3),
            "model_state entry 'extra' is 3, not a tensor",
            "file",
        ),
        (
            lambda s: s["config"].update(model=[]),
            "config.model must be an object of settings, not a list",
            "file",
        ),
        (
            lambda s: s["config"]["model"].update(kind=1),
            "config.model.kind must be a string, got 1",
            "file",
        ),
        (lambda s: s["config"].pop("train"), "config.train must be an object of", "file"),
        (lambda s: s["history"].pop("seconds"), "history must hold the lists epoch, ", "run"),
        (
            lambda s: s["config"]["train"].update(seed="0"),
            "config.train.seed must be an integer, got '0'",
            "run",
        ),
        (
            lambda s: s["config"]["train"].update(batch_size=0),
            "config.train: batch_size must be an integer of at least 1, got 0",
            "run",
        ),
    ],
)
def test_every_field_of_the_checkpoint_is_checked(run_copy, capsys, change, message, level):
    path = run_copy / "checkpoint.pt"
    reseal(path, change)
    readers = [lambda: open_run(run_copy), lambda: load_model(run_copy)]
    if level == "file":
        readers.append(lambda: checkpoint.load(path))
    for read in readers:
        with pytest.raises(UsageError) as refusal:
            read()
        assert str(refusal.value).startswith(str(path)) and message in str(refusal.value)
    before = files(run_copy)
    argv = ["train", "--out", str(run_copy), "--resume", "--epochs", "3", "--no-progress"]
    err = refused(argv, capsys)
    assert err.startswith(f"pyro-vae: error: {path}") and message in err
    assert files(run_copy) == before


def test_a_damaged_checkpoint_field_is_one_line_for_every_command(run_copy, tmp_path, capsys):
    path = run_copy / "checkpoint.pt"
    reseal(path, _pop("optimizer_state"))
    before = files(run_copy)
    for argv in commands(run_copy, tmp_path):
        err = refused(argv, capsys)
        assert f"{path} is not a usable checkpoint: its optimizer_state is missing" in err
    assert files(run_copy) == before


def test_a_checkpoint_of_a_newer_format_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "pyro_vae.checkpoint/9", "payload": b""}, path)
    with pytest.raises(UsageError, match=r"format 'pyro_vae\.checkpoint/9', which this version"):
        checkpoint.load(path)


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


# --- writes killed mid-way ---------------------------------------------------------------

#: a resume whose first checkpoint write is killed (SIGKILL) half-way through its bytes
KILLED_WRITE = """
import os, signal, sys
import pyro_vae.io
from pyro_vae.cli import main

class Killed:
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

pyro_vae.io.open = lambda path, mode: Killed(open(path, mode))
main(["train", "--out", sys.argv[1], "--resume", "--epochs", "3", "--no-progress"])
"""


def test_a_killed_write_leaves_a_leftover_that_the_next_start_removes(run_copy):
    before = (run_copy / "checkpoint.pt").read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITE, str(run_copy)], capture_output=True, env=env
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert (run_copy / "checkpoint.pt").read_bytes() == before  # the last good one
    [leftover] = leftovers(run_copy / "checkpoint.pt")
    assert 0 < leftover.stat().st_size < len(before)
    # files that are not a leftover of the checkpoint: never removed
    others = [".checkpoint.pt.notes", ".config.json.abcd1234.tmp", "checkpoint.pt.tmp"]
    for name in others:
        (run_copy / name).write_text("mine")
    assert (
        main(["train", "--out", str(run_copy), "--resume", "--epochs", "3", "--no-progress"]) == 0
    )
    assert not leftover.exists() and leftovers(run_copy / "checkpoint.pt") == []
    assert all((run_copy / name).read_text() == "mine" for name in others)
    assert checkpoint.load(run_copy / "checkpoint.pt")["epoch"] == 3


def test_remove_leftovers_takes_only_the_temporary_files_of_that_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    mine = [".checkpoint.pt.k2j_x9qa.tmp", ".checkpoint.pt.00000000.tmp"]
    kept = [
        "checkpoint.pt",
        ".checkpoint.pt.tmp",  # no random part
        ".checkpoint.pt.K2J_X9QA.tmp",  # not a name mkstemp makes
        ".checkpoint.pt.k2j_x9q.tmp",  # nor this
        ".checkpoint.pt.abc.tmp.bak",
        ".checkpoint.ptx.abcdefgh.tmp",
        ".other.pt.abcdefgh.tmp",
        "x.checkpoint.pt.abcdefgh.tmp",
    ]
    for name in mine + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".checkpoint.pt.folder00.tmp").mkdir()  # a folder: not a file of ours
    removed = remove_leftovers(target)
    assert sorted(p.name for p in removed) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*kept, ".checkpoint.pt.folder00.tmp"]
    )
    assert remove_leftovers(tmp_path / "absent" / "checkpoint.pt") == []


# --- a full disk -------------------------------------------------------------------------


def full_disk(monkeypatch) -> None:
    """Writes through :mod:`pyro_vae.io` fail half-way with ENOSPC."""
    import pyro_vae.io

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(
        pyro_vae.io, "open", lambda path, mode: Full(open(path, mode)), raising=False
    )


def test_a_full_disk_keeps_the_previous_checkpoint(toy_binary, tmp_path, monkeypatch):
    train, test = toy_binary
    path = tmp_path / "ckpt.pt"

    def run(epochs, resume):
        vae = VAE(16, z_dim=2, hidden_dims=(32,))
        config = TrainConfig(epochs=epochs, batch_size=32)
        fit(vae, train, test, config=config, checkpoint=path, resume=resume, progress=False)

    run(1, False)
    before = path.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(WriteFailed) as failed:
        run(2, True)
    assert isinstance(failed.value, OSError) and failed.value.errno == errno.ENOSPC
    assert str(failed.value) == (
        f"could not write the checkpoint {path}: the disk is full; the previous checkpoint "
        "is kept as it was. Free some space, then continue the run with resume"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary file
    monkeypatch.undo()
    run(2, True)  # space again: the run continues from the kept checkpoint
    assert checkpoint.load(path)["epoch"] == 2


def test_a_full_disk_is_one_line_on_the_command_line(run_copy, capsys, monkeypatch):
    path = run_copy / "checkpoint.pt"
    before = path.read_bytes()
    full_disk(monkeypatch)
    err = refused(["train", "--out", str(run_copy), "--resume", "--epochs", "3", "--no-progress"],
                  capsys)  # fmt: skip
    assert err == (
        f"pyro-vae: error: could not write the checkpoint {path}: the disk is full; the "
        "previous checkpoint is kept as it was. Free some space, then continue the run with "
        "--resume\n"
    )
    assert path.read_bytes() == before
    assert not list(run_copy.glob(".*.tmp"))
