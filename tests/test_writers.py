"""Nothing written is lost: one writer per run folder (a lock that names its holder and
outlives no process), ``--overwrite`` that replaces a run only once its successor is
whole, and outputs that replace earlier ones only with ``--force``."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FAST

from pyro_vae import locks, staging
from pyro_vae.cli import main
from pyro_vae.run import RunFolder, open_run

TRAIN = ["train", *FAST, "--epochs", "1", "--no-progress"]


def contents(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-vae: error"), err
    return err


# --- the lock -------------------------------------------------------------------------


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with locks.hold(tmp_path / "run", "pyro-vae train") as folder:
        assert locks.holder(folder)["pid"] == os.getpid()
        with pytest.raises(locks.FolderLocked) as refused, locks.hold(folder, "pyro-vae sample"):
            pass
    assert f"in use by process {os.getpid()} (pyro-vae train, since " in str(refused.value)
    assert not (tmp_path / "run" / locks.LOCK_NAME).exists()  # released and removed
    with locks.hold(tmp_path / "run", "again"):  # and free again
        pass


def test_a_failed_block_removes_the_folder_it_created_but_not_one_with_files(tmp_path):
    with pytest.raises(RuntimeError), locks.hold(tmp_path / "new", "x"):
        raise RuntimeError
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(RuntimeError), locks.hold(tmp_path / "old", "x"):
        raise RuntimeError
    assert (tmp_path / "old").is_dir()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pyro_vae import locks
    with locks.hold(sys.argv[1], "pyro-vae train"):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_train_is_refused_while_another_process_holds_the_folder_and_not_after_it_died(
    tmp_path, capsys
):
    out = tmp_path / "run"
    holder = [sys.executable, "-c", HOLDER, str(out)]
    with subprocess.Popen(holder, stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout.readline().strip() == "held"
            assert main([*TRAIN, "--out", str(out)]) == 2
            err = one_error(capsys)
            assert f"{out} is in use by process {other.pid} (pyro-vae train, since" in err
            assert [p.name for p in out.iterdir()] == [locks.LOCK_NAME]  # nothing written
        finally:
            other.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays behind
    assert locks.holder(out)["pid"] == other.pid
    assert main([*TRAIN, "--out", str(out)]) == 0  # a dead holder's lock is taken over
    assert RunFolder(out).exists() and not (out / locks.LOCK_NAME).exists()


def test_two_trainings_started_together_leave_one_whole_run(tmp_path):
    """Two ``train --out X`` a moment apart: one trains, the other is refused, and X
    holds one run whose configuration and checkpoint agree."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pyro_vae", *TRAIN, "--out", str(out)]
    runs = [
        subprocess.Popen([*command, "--z-dim", z], stderr=subprocess.PIPE, text=True)
        for z in ("2", "3")
    ]
    errors = "".join(run.communicate(timeout=300)[1] for run in runs)
    assert sorted(run.returncode for run in runs) == [0, 2], errors
    assert "is in use by process" in errors or "already holds a run" in errors
    model, _, config, _ = open_run(out)  # the checkpoint fits the configuration
    assert model.z_dim == config.model["z_dim"] in (2, 3)


# --- --overwrite ----------------------------------------------------------------------


@pytest.fixture
def old_run(run_copy):
    """A run folder with an evaluation's report and a user's notes."""
    (run_copy / "eval.json").write_text("{}")
    (run_copy / "notes.txt").write_text("my notes")
    return run_copy


def test_overwrite_that_diverges_leaves_the_old_run_whole(old_run, monkeypatch, capsys):
    from pyro_vae.cli import train as train_cli
    from pyro_vae.train import diverged

    before = contents(old_run)

    def fit_then_diverge(*args, **kwargs):
        train_cli_fit(*args, **kwargs)  # writes the new run's checkpoint
        raise diverged(1, "the training objective was nan", "kept")

    train_cli_fit = train_cli.fit
    monkeypatch.setattr(train_cli, "fit", fit_then_diverge)
    capsys.readouterr()
    assert main([*TRAIN, "--z-dim", "3", "--out", str(old_run), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"the new run is discarded, and {old_run} keeps the earlier run" in err
    assert contents(old_run) == before


def test_overwrite_refused_before_training_leaves_the_old_run_whole(old_run, capsys):
    before = contents(old_run)
    bad = ["--dataset", f"npz:{old_run / 'missing.npz'}"]
    assert main([*TRAIN, *bad, "--out", str(old_run), "--overwrite"]) == 2
    assert "missing.npz" in one_error(capsys)
    assert contents(old_run) == before


def test_overwrite_replaces_the_run_and_its_outputs_and_keeps_the_users_files(old_run):
    assert main([*TRAIN, "--z-dim", "3", "--out", str(old_run), "--overwrite"]) == 0
    names = {p.name for p in old_run.iterdir()}
    assert "eval.json" not in names and "samples.png" in names
    assert (old_run / "notes.txt").read_text() == "my notes"
    assert not {staging.STAGE, staging.REPLACED, locks.LOCK_NAME} & names
    assert open_run(old_run).model.z_dim == 3


def test_resume_and_overwrite_together_are_refused(old_run, capsys):
    assert main([*TRAIN, "--out", str(old_run), "--overwrite", "--resume"]) == 2
    assert "choose one" in one_error(capsys)


def _promote_fails_after(monkeypatch, moves: int) -> None:
    real = os.replace
    done = []

    def replace(src, dst):
        if len(done) == moves:
            raise KeyboardInterrupt  # killed between two renames
        done.append(dst)
        real(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)


OLD = {"config.json": "old config", "checkpoint.pt": "old weights", "eval.json": "old eval"}
NEW = {"config.json": "new config", "checkpoint.pt": "new weights", "samples.png": "new"}


@pytest.mark.parametrize("moves", range(len(OLD) + len(NEW) + 1))
def test_an_interrupted_promotion_is_undone_or_finished_on_the_next_start(
    tmp_path, monkeypatch, moves
):
    for name, text in OLD.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "notes.txt").write_text("mine")
    staged = staging.stage(tmp_path)
    for name, text in NEW.items():
        (staged / name).write_text(text)
    _promote_fails_after(monkeypatch, moves)
    try:
        staging.promote(tmp_path, RunFolder.STALE)
        finished = True
    except KeyboardInterrupt:
        finished = False
    monkeypatch.undo()
    staging.recover(tmp_path)
    texts = {p.name: p.read_text() for p in tmp_path.iterdir()}
    # the checkpoint is the last of the new files to move: once it has, the new run is
    # whole and stays; before, the old one comes back (a new file without an old
    # counterpart may stay beside it, a picture of the discarded run)
    new_in = finished or moves == len(OLD) + len(NEW)
    expected = {**(NEW if new_in else OLD), "notes.txt": "mine"}
    assert {k: texts[k] for k in expected} == expected
    assert set(texts) - set(expected) <= ({"eval.json"} if new_in else {"samples.png"})
    assert not (tmp_path / staging.STAGE).exists()
    assert not (tmp_path / staging.REPLACED).exists()


# --- outputs: never over an earlier one unless asked ------------------------------------


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.UnreliableWeights")  # 2 samples
def test_evaluate_keeps_an_earlier_evaluation_unless_forced(run_copy, capsys):
    evaluate = ["evaluate", "--run", str(run_copy), "--limit", "10", "--no-progress"]
    assert main([*evaluate, "--num-samples", "50"]) == 0
    report = run_copy / "eval_n10.json"
    before = report.read_bytes()
    capsys.readouterr()
    again = [*evaluate, "--num-samples", "2", "--naive-samples", "0"]
    assert main(again) == 2
    assert f"{report} exists, written by an earlier command; pass --force" in one_error(capsys)
    assert report.read_bytes() == before
    assert main([*again, "--force"]) == 0
    assert json.loads(report.read_text())["num_samples"] == 2


@pytest.mark.parametrize("command", ["sample", "complete"])
def test_sample_and_complete_keep_an_earlier_picture_unless_forced(
    command, digits_run, cvae_run, tmp_path, capsys
):
    run = digits_run if command == "sample" else cvae_run
    out = tmp_path / "picture.png"
    out.write_bytes(b"an earlier picture")
    assert main([command, "--run", str(run), "--out", str(out)]) == 2
    assert f"{out} exists" in one_error(capsys)
    assert out.read_bytes() == b"an earlier picture"
    assert main([command, "--run", str(run), "--out", str(out), "--force"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_a_command_writing_into_a_held_run_folder_is_refused(run_copy, capsys):
    with locks.hold(run_copy, "pyro-vae train"):  # this process's: refused all the same
        assert main(["sample", "--run", str(run_copy)]) == 2
        assert "is in use by process" in one_error(capsys)
        assert not (run_copy / "prior_samples_64.png").exists()
