"""``pyro-vae train --model cvae|regressor --task``, ``complete`` and ``evaluate`` on them."""

import json
import shutil

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.models import CVAE, Regressor
from pyro_vae.run import open_run

FAST = ["--dataset", "digits", "--epochs", "2", "--hidden-dims", "32", "--no-progress"]


@pytest.fixture(scope="module")
def regressor_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("regressor") / "run"
    assert main(["train", *FAST, "--model", "regressor", "--task", "label", "--out", str(out)]) == 0
    return out


def test_cvae_run_writes_its_files_and_config(cvae_run):
    names = {p.name for p in cvae_run.iterdir()}
    assert {"config.json", "checkpoint.pt", "results.json", "loss.png", "completions.png"} <= names
    assert "samples.png" not in names  # a conditional model has no unconditional samples
    config = json.loads((cvae_run / "config.json").read_text())
    assert config["model"]["task"] == "quadrants-2" and "task" not in config["data"]
    assert config["model"]["kind"] == "cvae" and config["model"]["prior"] == "learned"
    assert (config["model"]["x_dim"], config["model"]["y_dim"]) == (32, 32)  # 8x8 halves
    results = json.loads((cvae_run / "results.json").read_text())
    assert results["model"] == "cvae" and results["target"] == "P(Y|X)"
    assert results["description"] == "CVAE on task quadrants-2"
    # 32 binary pixels of Y: between coin flips (-32 log 2, with training slack) and 0
    assert -32 * np.log(2) - 5 < results["test_elbo"] < 0
    assert "ELBO of log P(Y\\|X)" in (cvae_run / "results.md").read_text()
    model = open_run(cvae_run).model
    assert isinstance(model, CVAE) and model.prior_net is not None


def test_complete_draws_several_completions(cvae_run, tmp_path):
    from pictures import LEVEL, completion_panels

    from pyro_vae import data as data_mod
    from pyro_vae.plots import condition_rgb
    from pyro_vae.run import load_model
    from pyro_vae.splits import spread_subset
    from pyro_vae.tasks import pairs, task_for

    out = tmp_path / "c.png"
    args = ["complete", "--run", str(cvae_run), "-n", "3", "--inputs", "4", "--seed", "2"]
    assert main([*args, "--out", str(out)]) == 0
    # what the figure must show: 4 evenly spaced test conditions X, their ground truth Y
    # and 3 completions, each the mean of P(Y|z, X) for one z ~ P(z|X) drawn after
    # seeding torch with --seed
    dataset = data_mod.load("digits", binarize="dynamic")
    task = task_for("quadrants-2", dataset)
    x, y = pairs(task, dataset, "test")
    idx = spread_subset(len(x), 4)
    x, y = x[idx], y[idx]
    model = load_model(cvae_run)
    torch.manual_seed(2)
    completions = model.complete(x, 3)
    expected = torch.stack([condition_rgb(task, x, rows) for rows in (y, *completions)])
    panels = completion_panels(out, task)
    # a row per drawn row (ground truth, then -n completions), a column per --inputs
    assert panels.shape[:2] == (4, 4)
    np.testing.assert_allclose(panels, expected.numpy(), atol=2 * LEVEL)
    # every completion keeps the given pixels of its condition X, and fills in the rest
    given = task.x_mask.reshape(task.image_shape).numpy()
    assert (panels[1:, :, given] == panels[:1, :, given]).all()
    assert not np.allclose(panels[1:, :, ~given], panels[:1, :, ~given], atol=0.1)
    # other -n and --inputs, the default name of the training split's figure
    assert main(["complete", "--run", str(cvae_run), "--split", "train", "-n", "2"]) == 0
    assert completion_panels(cvae_run / "completions_train_n2.png", task).shape[:2] == (3, 8)


def test_evaluate_cvae_reports_conditional_bounds(cvae_run):
    args = ["evaluate", "--run", str(cvae_run), "--num-samples", "100", "--ks", "1,10"]
    assert main([*args, "--limit", "50", "--no-progress"]) == 0
    report = json.loads((cvae_run / "eval_n50.json").read_text())
    assert report["target"] == "P(Y|X)" and report["description"] == "CVAE on task quadrants-2"
    per_point = {k: np.array(v) for k, v in report["per_point"].items()}
    # two estimators of one quantity, z from Q(z|X,Y) and from the learned P(z|X):
    # they agree within 4 paired standard errors over the images
    diff = per_point["log_px"] - per_point["log_px_prior"]
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(len(diff))
    # the tutorial's metric is minus the ELBO from fresh samples; 0.1 nats bounds the
    # Monte Carlo noise of 500 log weights against 5,000 here (measured: 0.01)
    assert report["negative_elbo_10_particles"] == pytest.approx(-per_point["elbo"].mean(), abs=0.1)
    table = (cvae_run / "eval_n50.md").read_text()
    assert "log P(Y\\|X), z from Q(z\\|X,Y)" in table
    assert "Pyro's CVAE tutorial; for any model" in table
    for line in table.splitlines():  # every table row has exactly three cells
        if line.startswith("| "):
            assert line.replace("\\|", "").count("|") == 4, line


def test_regressor_evaluation_is_exact(regressor_run):
    assert main(["evaluate", "--run", str(regressor_run)]) == 0
    report = json.loads((regressor_run / "eval.json").read_text())
    assert report["exact"] and report["description"] == "regressor on task label"
    model = open_run(regressor_run).model
    assert isinstance(model, Regressor) and model.x_dim == 10
    # the same number three ways: the evaluator, by hand, and training's final score
    from pyro_vae import data as data_mod
    from pyro_vae.tasks import pairs, task_for

    dataset = data_mod.load("digits", binarize="dynamic")
    x, y = pairs(task_for("label", dataset), dataset, "test")
    logits = model.net(x)
    by_hand = -torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    expected = by_hand.sum(-1).mean().item()
    assert report["summary"]["log_px"]["mean"] == pytest.approx(expected, abs=1e-4)
    results = json.loads((regressor_run / "results.json").read_text())
    assert results["exact"] and results["test_elbo"] == pytest.approx(expected, abs=1e-3)


def test_resume_a_cvae_run_and_refuse_another_task(cvae_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cvae_run, run)  # the module's run stays as it was for other tests
    resume = ["train", "--out", str(run), "--resume"]
    assert main([*resume, "--epochs", "3", "--no-progress"]) == 0
    resumed = json.loads((run / "history.json").read_text())
    assert resumed["epoch"] == [1, 2, 3]
    # the same three epochs in one go give the same numbers
    args = ["train", *FAST, "--model", "cvae", "--task", "quadrants-2", "--z-dim", "2"]
    once = tmp_path / "once"
    assert main([*args, "--prior", "learned", "--epochs", "3", "--out", str(once)]) == 0
    uninterrupted = json.loads((once / "history.json").read_text())
    for key in ("train_objective", "test_elbo"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6)
    assert main([*resume, "--task", "label"]) == 2
    assert "--task label (run has quadrants-2)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "label"], "--task applies to --model cvae or regressor, not to --model vae"),
        (["--prior", "learned"], "--prior learned is the conditional prior network P(z|X)"),
        (["--model", "cvae"], "--model cvae needs --task, one of center-column, quadrants-1"),
        (["--model", "regressor", "--task", "label", "--prior", "fixed"], "drop --prior"),
        (["--model", "regressor", "--task", "label", "--z-dim", "3"], "drop --z-dim"),
        (["--model", "regressor", "--task", "label", "--beta", "0.5"], "drop --beta"),
        (["--model", "regressor", "--task", "label", "--objective", "iwae"], "drop --objective"),
    ],
)
def test_bad_model_options_exit_2(tmp_path, capsys, args, message):
    assert main(["train", *FAST, *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_bad_task_name_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "cvae", "--task", "halves"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'halves'" in capsys.readouterr().err


def test_label_task_without_labels_exits_2(tmp_path, capsys):
    path = tmp_path / "nolabels.npz"
    images = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    np.savez(path, x_train=images[:30], x_test=images[30:])
    args = ["train", "--dataset", f"npz:{path}", "--model", "cvae", "--task", "label"]
    assert main([*args, "--batch-size", "10", "--out", str(tmp_path / "r")]) == 2
    assert "the label task needs class labels" in capsys.readouterr().err


def test_negative_labels_exit_2(tmp_path, capsys):
    path = tmp_path / "neg.npz"
    images = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    labels = np.arange(40) % 3 - 1
    np.savez(path, x_train=images[:30], x_test=images[30:], y_train=labels[:30], y_test=labels[30:])
    args = ["train", "--dataset", f"npz:{path}", "--model", "cvae", "--task", "label"]
    assert main([*args, "--batch-size", "10", "--out", str(tmp_path / "r")]) == 2
    assert "y_train holds negative labels (min -1)" in capsys.readouterr().err


def test_overwrite_removes_the_old_runs_evaluations(tmp_path):
    run = tmp_path / "run"
    args = ["train", *FAST, "--epochs", "1", "--model", "regressor", "--task", "label"]
    assert main([*args, "--out", str(run)]) == 0
    assert main(["evaluate", "--run", str(run), "--limit", "20"]) == 0
    assert main(["complete", "--run", str(run)]) == 0
    assert (run / "eval_n20.json").is_file() and (run / "completions_test.png").is_file()
    assert main(["train", *FAST, "--epochs", "1", "--out", str(run), "--overwrite"]) == 0
    names = {p.name for p in run.iterdir()}
    assert not names & {"eval_n20.json", "eval_n20.md", "completions_test.png"}
    assert "samples.png" in names


def test_commands_refuse_the_wrong_kind_of_run(cvae_run, tmp_path, capsys):
    vae_run = tmp_path / "vae"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(vae_run)]) == 0
    capsys.readouterr()
    assert main(["complete", "--run", str(vae_run)]) == 2
    assert "this VAE cannot complete a condition" in capsys.readouterr().err
    assert main(["sample", "--run", str(cvae_run)]) == 2
    assert "use `pyro-vae complete" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(cvae_run), "--gap-decomposition"]) == 2
    assert "Drop --gap-decomposition" in capsys.readouterr().err
