"""Paths of the command line that a user meets by mistake: every refusal is exit
status 2 and one line naming the problem (no traceback); and options whose effect is a
value (``--lr-schedule burda``, ``--vq-dim``, ``--vq-commitment``, ``--device cpu``)
reach what they set."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST

from pyro_vae import checkpoint
from pyro_vae.cli import main
from pyro_vae.cli.complete import MAX_FIGURE_SIDE
from pyro_vae.cli.sample import MAX_SAMPLES


def refused(argv, capsys) -> str:
    """Run ``pyro-vae ARGV``, which must refuse with status 2 and one line on standard
    error (from the command or from its parser); returns that line."""
    try:
        status = main(argv)
    except SystemExit as stop:  # refused by the parser
        status = stop.code
    captured = capsys.readouterr()
    assert status == 2, captured.err
    err = captured.err
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line, no traceback
    assert err.startswith(("pyro-vae: error", f"pyro-vae {argv[0]}: error")), err
    return err


# --- limits of sample and complete -----------------------------------------------------


def test_sample_refuses_more_than_max_samples_before_reading_the_run(tmp_path, capsys):
    # checked first: the folder holds no run, and that is not what it says
    err = refused(["sample", "--run", str(tmp_path), "-n", str(MAX_SAMPLES + 1)], capsys)
    assert f"-n must be at most {MAX_SAMPLES}, got {MAX_SAMPLES + 1}" in err
    assert not list(tmp_path.iterdir())


def test_sample_draws_exactly_max_samples(run_copy, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", "--run", str(run_copy), "-n", str(MAX_SAMPLES), "--out", str(out)]) == 0
    from pictures import read_rgb

    # a square grid of 100 x 100 images of 8 x 8 pixels, 1 pixel apart, fills the canvas
    assert read_rgb(out).shape[1] == 720


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        (["-n", str(MAX_FIGURE_SIDE + 1)], f"got {MAX_FIGURE_SIDE + 1} and 8"),
        (["--inputs", str(MAX_FIGURE_SIDE + 1)], f"got 5 and {MAX_FIGURE_SIDE + 1}"),
    ],
)
def test_complete_refuses_a_side_over_max_figure_side(tmp_path, capsys, options, shown):
    err = refused(["complete", "--run", str(tmp_path), *options], capsys)
    assert f"-n and --inputs must be at most {MAX_FIGURE_SIDE}, {shown}" in err


# --- evaluate --ks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ks", "message"),
    [
        ("1,five", "argument --ks: expected comma-separated integers, got '1,five'"),
        ("1.5", "argument --ks: expected comma-separated integers, got '1.5'"),
        ("0,5", "argument --ks: expected integers >= 1, got '0,5'"),
        ("-5", "argument --ks: expected integers >= 1, got '-5'"),
        (",", "argument --ks: expected integers >= 1, got ','"),
    ],
)
def test_evaluate_ks_that_do_not_parse_exit_2(digits_run, capsys, ks, message):
    err = refused(["evaluate", "--run", str(digits_run), f"--ks={ks}"], capsys)
    assert message in err and err.startswith("pyro-vae evaluate: error: ")


def test_evaluate_ks_are_sorted_and_deduplicated(run_copy):
    args = ["evaluate", "--run", str(run_copy), "--num-samples", "10", "--limit", "2"]
    assert main([*args, "--ks", "5, 1,5,2", "--no-progress"]) == 0
    assert json.loads((run_copy / "eval_n2.json").read_text())["ks"] == [1, 2, 5]


# --- train --resume --------------------------------------------------------------------


def test_resume_without_out_exits_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = refused(["train", *FAST, "--resume"], capsys)
    assert "--resume needs --out pointing at a run folder" in err
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_folder_without_a_checkpoint_exits_2(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = refused(["train", "--out", str(empty), "--resume"], capsys)
    assert f"--resume: {empty} holds no run (no checkpoint.pt) to continue" in err
    assert not list(empty.iterdir())
    err = refused(["train", "--out", str(tmp_path / "missing"), "--resume"], capsys)
    assert "holds no run (no checkpoint.pt)" in err


# --- devices ---------------------------------------------------------------------------

#: every command that takes --device, with the arguments it needs besides (a run folder
#: is filled in: the device is refused before the run is used)
DEVICE_COMMANDS = {
    "train": lambda run, out: ["train", *FAST, "--out", str(out)],
    "sample": lambda run, out: ["sample", "--run", str(run), "--out", str(out / "s.png")],
    "evaluate": lambda run, out: ["evaluate", "--run", str(run), "--num-samples", "5"],
    "complete": lambda run, out: ["complete", "--run", str(run), "--out", str(out / "c.png")],
}


@pytest.mark.parametrize("command", list(DEVICE_COMMANDS))
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("banana", "unknown device 'banana' ("),
        ("cuda:x", "unknown device 'cuda:x' ("),
        ("meta", "unsupported device 'meta'; use cpu, cuda or cuda:N"),
    ],
)
def test_a_device_that_is_not_one_exits_2(digits_run, tmp_path, capsys, command, device, message):
    argv = DEVICE_COMMANDS[command](digits_run, tmp_path / "out")
    err = refused([*argv, "--device", device], capsys)
    assert message in err
    if message.startswith("unknown"):
        assert err.rstrip().endswith("; use cpu, cuda or cuda:N")
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
@pytest.mark.parametrize("command", list(DEVICE_COMMANDS))
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_exits_2_for_every_command(
    digits_run, tmp_path, capsys, command, device
):
    argv = DEVICE_COMMANDS[command](digits_run, tmp_path / "out")
    err = refused([*argv, "--device", device], capsys)
    assert f"--device {device}: CUDA is not available on this machine; use --device cpu" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("command", list(DEVICE_COMMANDS))
def test_a_cuda_index_past_the_gpus_exits_2(digits_run, tmp_path, capsys, command):
    n = torch.cuda.device_count()
    argv = DEVICE_COMMANDS[command](digits_run, tmp_path / "out")
    err = refused([*argv, "--device", f"cuda:{n}"], capsys)
    assert f"--device cuda:{n}: only {n} CUDA device(s) present" in err


def test_device_cpu_samples_the_models_prior(digits_run, tmp_path):
    from pictures import assert_axes_match

    from pyro_vae.plots import grid_figure
    from pyro_vae.run import load_model

    out = tmp_path / "cpu.png"
    args = ["sample", "--run", str(digits_run), "-n", "6", "--seed", "2", "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    drawn = load_model(digits_run).sample(6, generator=torch.Generator().manual_seed(2))
    figure = grid_figure(drawn, (8, 8), "6 samples from the prior (seed 2)")
    assert_axes_match(out, figure, tmp_path)


def test_device_cpu_evaluates_the_numbers_of_the_library(run_copy):
    from pyro_vae.evaluate import evaluate_dataset
    from pyro_vae.run import RunFolder, load_model
    from pyro_vae.splits import spread_subset

    args = ["evaluate", "--run", str(run_copy), "--num-samples", "20", "--ks", "1,4"]
    assert main([*args, "--limit", "3", "--seed", "6", "--device", "cpu", "--no-progress"]) == 0
    report = json.loads((run_copy / "eval_n3.json").read_text())
    model = load_model(run_copy, "cpu")
    (x,) = model.evaluation_data(RunFolder(run_copy).read_config().data.load(), "test")
    x = x[spread_subset(len(x), 3)]
    ev = evaluate_dataset(model.model, model.proposal, x, num_samples=20, ks=(1, 4), seed=6)
    np.testing.assert_allclose(report["per_point"]["log_px"], ev.log_px.tolist(), rtol=1e-6)
    np.testing.assert_allclose(report["per_point"]["L_4"], ev.bounds[1].tolist(), rtol=1e-6)
    assert all(math.isfinite(v) for v in report["per_point"]["log_px"])


def test_device_cpu_completes_with_the_models_draws(cvae_run, tmp_path):
    from pictures import LEVEL, completion_panels

    from pyro_vae import data as data_mod
    from pyro_vae.plots import condition_rgb
    from pyro_vae.run import load_model
    from pyro_vae.splits import spread_subset
    from pyro_vae.tasks import pairs, task_for

    out = tmp_path / "cpu.png"
    args = ["complete", "--run", str(cvae_run), "-n", "2", "--inputs", "3", "--seed", "4"]
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    dataset = data_mod.load("digits", binarize="dynamic")
    task = task_for("quadrants-2", dataset)
    x, y = pairs(task, dataset, "test")
    x, y = x[spread_subset(len(x), 3)], y[spread_subset(len(x), 3)]
    model = load_model(cvae_run, "cpu")
    torch.manual_seed(4)
    rows = (y, *model.complete(x, 2))
    expected = torch.stack([condition_rgb(task, x, r) for r in rows]).numpy()
    np.testing.assert_allclose(completion_panels(out, task), expected, atol=2 * LEVEL)


# --- run folders that are not one ------------------------------------------------------


def test_a_checkpoint_of_another_program_is_not_a_pyro_vae_checkpoint(run_copy, capsys):
    torch.save({"model": {"weight": torch.zeros(2)}}, run_copy / "checkpoint.pt")
    for argv in (
        ["sample", "--run", str(run_copy)],
        ["evaluate", "--run", str(run_copy)],
        ["train", "--out", str(run_copy), "--resume", "--epochs", "3"],
    ):
        err = refused(argv, capsys)
        assert f"{run_copy / 'checkpoint.pt'} is not a pyro_vae checkpoint" in err
        assert f"(expected format {checkpoint.FORMAT})" in err


def test_a_corrupt_checkpoint_is_not_readable(run_copy, capsys):
    (run_copy / "checkpoint.pt").write_bytes(b"not a checkpoint\n" * 10)
    err = refused(["sample", "--run", str(run_copy)], capsys)
    assert f"{run_copy / 'checkpoint.pt'} is not a readable checkpoint (" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "config.json is not readable JSON ("),
        ("", "config.json is not readable JSON ("),
        ('{"format": "pyro_vae.run/9"}', "was written in format 'pyro_vae.run/9'"),
        ('{"format": "pyro_vae.run/2", "model": {}}', "records no data set or no model"),
    ],
)
def test_an_unreadable_config_json_exits_2_for_every_command(
    run_copy, tmp_path, capsys, text, message
):
    (run_copy / "config.json").write_text(text)
    for argv in (
        ["sample", "--run", str(run_copy), "--out", str(tmp_path / "s.png")],
        ["evaluate", "--run", str(run_copy)],
        ["complete", "--run", str(run_copy), "--out", str(tmp_path / "c.png")],
        ["train", "--out", str(run_copy), "--resume", "--epochs", "3"],
    ):
        err = refused(argv, capsys)
        assert message in err, argv
        assert str(run_copy / "config.json") in err, argv
    assert not list(tmp_path.glob("*.png"))


def test_an_unreadable_config_json_leaves_the_run_as_it_was(run_copy, capsys):
    (run_copy / "config.json").write_text("{not json")
    before = (run_copy / "checkpoint.pt").read_bytes()
    refused(["train", "--out", str(run_copy), "--resume", "--epochs", "3"], capsys)
    assert (run_copy / "checkpoint.pt").read_bytes() == before
    assert (run_copy / "config.json").read_text() == "{not json"


# --- values that options set -----------------------------------------------------------


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory) -> list[str]:
    """``--dataset`` of 128 training and 32 test images of the digits (an npz file):
    one step per epoch, for tests of what an option sets, not of what a model learns."""
    from pyro_vae import data as data_mod

    digits = data_mod.load("digits")
    path = tmp_path_factory.mktemp("few") / "digits.npz"
    x_train, x_test = (t.reshape(-1, 8, 8).numpy() for t in (digits.x_train, digits.x_test))
    np.savez(path, x_train=x_train[:128], x_test=x_test[:32])
    return ["--dataset", f"npz:{path}", "--hidden-dims", "16", "--no-progress"]


def test_burda_schedule_sets_the_step_size_of_every_epoch(tmp_path, few_digits):
    """--lr-schedule burda: stage i lasts 3^i epochs at lr 10^(-i/7); the optimizer
    state in the checkpoint holds the step size of the last epoch trained."""
    run = tmp_path / "run"
    lr = 0.002

    def stored_lr() -> float:
        state = checkpoint.load(run / "checkpoint.pt")["optimizer_state"]
        (group,) = state["param_groups"]
        return group["lr"]

    schedule = ["--lr", str(lr), "--lr-schedule", "burda"]
    assert main(["train", *few_digits, *schedule, "--epochs", "1", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["lr_schedule"] == "burda"
    assert stored_lr() == pytest.approx(lr, rel=1e-12)  # epoch 1: stage 0
    resume = ["train", "--out", str(run), "--resume", "--no-progress"]
    for epochs, stage in ((2, 1), (3, 1), (4, 1), (5, 2)):  # 2-4: stage 1, 5-13: stage 2
        assert main([*resume, "--epochs", str(epochs)]) == 0
        assert stored_lr() == pytest.approx(lr * 10 ** (-stage / 7), rel=1e-12), epochs
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3, 4, 5]


def test_vq_dim_and_commitment_reach_the_model(tmp_path, few_digits):
    from pyro_vae.run import load_model

    train = ["train", *few_digits, "--epochs", "1", "--model", "vqvae", "--vq-codes", "5"]
    run = tmp_path / "run"
    assert main([*train, "--vq-dim", "3", "--vq-commitment", "0.6", "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["model"]
    assert (stored["codes"], stored["code_dim"], stored["commitment"]) == (5, 3, 0.6)
    model = load_model(run)
    assert tuple(model.quantizer.codebook.shape) == (5, 3)  # 5 codes of 3 numbers
    assert model.encoder(torch.zeros(2, 64)).shape == (2, 3)  # one slot of 3 numbers
    assert model.commitment == 0.6
    # and the defaults where they are not given: D = 16, beta = 0.25
    other = tmp_path / "other"
    assert main([*train, "--out", str(other)]) == 0
    stored = json.loads((other / "config.json").read_text())["model"]
    assert (stored["code_dim"], stored["commitment"]) == (16, 0.25)
    assert load_model(other).commitment == 0.25


def test_bad_vq_dim_and_commitment_exit_2(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--model", "vqvae", "--out", str(tmp_path / "r")]
    err = refused([*args, "--vq-dim", "0"], capsys)
    assert "argument --vq-dim: expected an integer in [1, 1048576], got 0" in err
    err = refused([*args, "--vq-commitment=-1"], capsys)
    assert "argument --vq-commitment: expected a number in [0, 1000], got -1" in err
    err = refused([*args, "--vq-commitment", "nan"], capsys)
    assert "argument --vq-commitment: expected a number in [0, 1000], got nan" in err
    assert not (tmp_path / "r").exists()


# --- launch errors under torchrun ------------------------------------------------------


@pytest.fixture
def rank_0_of_2(monkeypatch):
    """The environment torchrun gives rank 0 of 2 processes on one node, without a
    process group: every refusal here comes before joining one."""
    from pyro_vae import cli

    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(cli, "LAUNCH_ERROR_GRACE_S", 0.0)


#: the commands that run under torchrun, with the arguments they need besides
LAUNCHED = {
    "train": lambda run, out: ["train", *FAST, "--out", str(out)],
    "evaluate": lambda run, out: ["evaluate", "--run-dir", str(run), "--num-samples", "5"],
}


@pytest.mark.parametrize("command", list(LAUNCHED))
def test_a_world_size_that_is_no_integer_exits_2(
    rank_0_of_2, monkeypatch, capsys, command, digits_run, tmp_path
):
    monkeypatch.setenv("WORLD_SIZE", "two")
    err = refused(LAUNCHED[command](digits_run, tmp_path / "out"), capsys)
    assert "the environment variable WORLD_SIZE='two' is not an integer" in err
    err = refused(["sample", "--run", str(digits_run)], capsys)  # also where it runs alone
    assert "WORLD_SIZE='two' is not an integer" in err


@pytest.mark.parametrize("command", list(LAUNCHED))
def test_missing_launch_variables_exit_2(
    rank_0_of_2, monkeypatch, capsys, command, digits_run, tmp_path
):
    monkeypatch.delenv("MASTER_PORT")
    monkeypatch.delenv("MASTER_ADDR")
    err = refused(LAUNCHED[command](digits_run, tmp_path / "out"), capsys)
    assert "WORLD_SIZE is 2 but MASTER_ADDR, MASTER_PORT are not set; start several " in err
    assert "torchrun --nproc-per-node N -m pyro_vae" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", list(LAUNCHED))
def test_a_cuda_index_under_torchrun_exits_2(rank_0_of_2, capsys, command, digits_run, tmp_path):
    argv = [*LAUNCHED[command](digits_run, tmp_path / "out"), "--device", "cuda:0"]
    err = refused(argv, capsys)
    assert (
        "--device cuda:0: under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda" in err
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_evaluate_with_nccl_without_gpus_exits_2(rank_0_of_2, capsys, digits_run, tmp_path):
    err = refused([*LAUNCHED["evaluate"](digits_run, tmp_path), "--device", "cuda"], capsys)
    assert "--device cuda: CUDA is not available on this machine, so the nccl backend" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_more_processes_than_gpus_exits_2(rank_0_of_2, monkeypatch, capsys, digits_run, tmp_path):
    n = torch.cuda.device_count()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(n + 1))
    monkeypatch.setenv("WORLD_SIZE", str(n + 1))
    err = refused([*LAUNCHED["evaluate"](digits_run, tmp_path), "--device", "cuda"], capsys)
    assert f"than it has GPUs ({n}); pass --nproc-per-node {n} or fewer" in err


@pytest.mark.parametrize("command", list(LAUNCHED))
def test_a_launch_error_is_said_by_rank_0_alone(
    rank_0_of_2, monkeypatch, capsys, command, digits_run, tmp_path
):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = [*LAUNCHED[command](digits_run, tmp_path / "out"), "--device", "cuda:0"]
    assert main(argv) == 2
    assert capsys.readouterr().err == ""  # rank 0 says it, once


def test_an_error_of_one_rank_names_the_rank(
    rank_0_of_2, monkeypatch, capsys, digits_run, tmp_path
):
    # a device that is none is not a launch setting: every rank reports what it meets
    monkeypatch.setenv("RANK", "1")
    err = refused([*LAUNCHED["evaluate"](digits_run, tmp_path), "--device", "banana"], capsys)
    assert err.startswith("pyro-vae: error (rank 1): unknown device 'banana'")


def test_evaluate_launch_error_under_torchrun_is_one_line(digits_run, tmp_path):
    """Two gloo processes refuse --device cuda:0 before joining a group: rank 0 prints
    one line, and the job exits 2."""
    from test_distributed import _one_error_line, torchrun

    proc = torchrun("evaluate", "--run-dir", str(digits_run), "--device", "cuda:0", timeout=120)
    assert proc.returncode != 0
    _one_error_line(proc.stderr, "--device cuda:0: under torchrun each rank uses cuda:LOCAL_RANK")
    assert "exitcode  : 2" in proc.stderr  # rank 0 exited 2 (torchrun then reports it)
    # torchrun prints a traceback of its own; none comes from pyro_vae's code
    assert "pyro_vae/" not in proc.stderr


# --- outputs never clobber a run's own files ------------------------------------------


@pytest.mark.parametrize("command", ["sample", "complete"])
@pytest.mark.parametrize("name", ["checkpoint.pt", "config.json", "history.json"])
def test_a_picture_is_never_written_over_the_runs_own_files(
    run_copy, cvae_run, tmp_path, capsys, command, name
):
    run = run_copy
    if command == "complete":
        run = tmp_path / "cvae"
        shutil.copytree(cvae_run, run)
    before = (run / name).read_bytes()
    err = refused([command, "--run", str(run), "--out", str(run / name)], capsys)
    assert f"--out {run / name} writes a PNG file, so its name must end in .png" in err
    assert (run / name).read_bytes() == before


def test_an_output_is_refused_over_a_run_file_by_any_path(run_copy):
    from pyro_vae.errors import UsageError
    from pyro_vae.run import RunFolder

    folder = RunFolder(run_copy)
    (run_copy / "sub").mkdir()
    same = run_copy / "sub" / ".." / "checkpoint.pt"  # the checkpoint, by another path
    with pytest.raises(UsageError, match=r"is the run's own checkpoint\.pt"):
        folder.check_output(same, ".pt")
    with pytest.raises(UsageError, match=r"^out .*samples\.jpg writes a PNG file"):
        folder.check_output(run_copy / "samples.jpg", ".png")
    assert folder.check_output(run_copy / "mine.png", ".png") == run_copy / "mine.png"
