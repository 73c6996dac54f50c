"""``pyro-vae train --tensorboard``: the event files, read back with TensorBoard's own
reader, hold history.json's values at one step per epoch; a resumed run continues the
curves without duplicate steps; the pictures leave the training numbers alone; and
without the tensorboard package the flag is one line naming the extra."""

import json
import sys

import numpy as np
import pytest
from conftest import FAST

from pyro_vae.cli import main

pytest.importorskip("tensorboard")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _scalars(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_the_event_files_hold_the_history_one_step_per_epoch(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--no-progress", "--tensorboard", "--out", str(run)]) == 0
    history = json.loads((run / "history.json").read_text())
    events = _events(run / "tensorboard")
    for tag, key in [
        ("train/objective", "train_objective"),
        ("test/elbo", "test_elbo"),
        ("train/kl_weight", "kl_weight"),
        ("train/seconds", "seconds"),
    ]:
        steps, values = zip(*_scalars(events, tag), strict=True)
        assert list(steps) == history["epoch"] == [1, 2], tag
        np.testing.assert_allclose(values, history[key], rtol=1e-6, err_msg=tag)
    assert _scalars(events, "train/lr") == [(1, pytest.approx(1e-3)), (2, pytest.approx(1e-3))]
    # the pictures: a grid of 32 prior samples (6 x 6 digits of 8 x 8 pixels, 1 pixel
    # apart), and 16 test images in two rows of 8 above their reconstructions in two more
    samples, pictures = events.Images("samples"), events.Images("reconstructions")
    assert [e.step for e in samples] == [e.step for e in pictures] == [1, 2]
    assert (samples[-1].height, samples[-1].width) == (6 * 9 - 1, 6 * 9 - 1)
    assert (pictures[-1].height, pictures[-1].width) == (4 * 9 - 1, 8 * 9 - 1)


def test_a_resumed_run_continues_the_curves_without_duplicate_steps(tmp_path):
    """Epoch 3 is written twice: by a run that is then set back to its epoch-2 files (as
    if it had been killed after writing its events), and by the resumed run, whose
    first step purges the stale one."""
    import shutil

    run, board, saved = tmp_path / "run", tmp_path / "board", tmp_path / "saved"
    given = [*FAST, "--no-progress", "--tensorboard", str(board), "--out", str(run)]
    assert main(["train", *given]) == 0
    shutil.copytree(run, saved)
    assert main(["train", *given, "--resume", "--epochs", "3"]) == 0
    for name in ("checkpoint.pt", "history.json", "config.json"):
        shutil.copy(saved / name, run / name)
    assert main(["train", *given, "--resume", "--epochs", "3"]) == 0
    history = json.loads((run / "history.json").read_text())
    steps, values = zip(*_scalars(_events(board), "test/elbo"), strict=True)
    assert list(steps) == [1, 2, 3]
    np.testing.assert_allclose(values, history["test_elbo"], rtol=1e-6)


def test_the_pictures_leave_the_training_numbers_alone(tmp_path):
    runs = {}
    for name, extra in (("plain", []), ("board", ["--tensorboard"])):
        run = tmp_path / name
        assert main(["train", *FAST, "--no-progress", *extra, "--out", str(run)]) == 0
        runs[name] = json.loads((run / "history.json").read_text())
    for key in ("train_objective", "test_elbo"):
        assert runs["plain"][key] == runs["board"][key]


def test_without_tensorboard_the_flag_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run = tmp_path / "run"
    assert main(["train", *FAST, "--tensorboard", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'pyro-vae[tensorboard]'" in err, err
    assert not run.exists()
