"""Sizes, option dependencies and paths that a careless or hostile command line gives
``pyro-vae evaluate``, ``sample``, ``complete`` and ``reproduce``: each is refused with
exit status 2 and one line naming the problem and the fix, before any work, and the run
folder is left as it was (the same files, byte for byte)."""

import json
import shutil

import numpy as np
import pytest
from test_cli_paths import refused

from pyro_vae.cli import build_parser, main
from pyro_vae.cli.evaluate_options import (
    MAX_AIS_CHAINS,
    MAX_AIS_STEPS,
    MAX_BATCH_SIZE,
    MAX_GAP_STEPS,
    MAX_LEAPFROG_STEPS,
    MAX_NUM_SAMPLES,
    check_options,
    check_sizes,
)
from pyro_vae.cli.reproduce import MAX_JOBS, MAX_THREADS
from pyro_vae.errors import UsageError

HUGE = "99999999999999999999"  # more than any int64


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--run", ""],
        ["sample", "--run", ""],
        ["complete", "--run", " "],
        ["sample", "--run", "{run}", "--out", ""],
        ["complete", "--run", "{run}", "--out", ""],
        ["reproduce", "--collect", "--out", ""],
    ],
)
def test_an_empty_path_is_no_path(run_copy, capsys, argv):
    before = snapshot(run_copy)
    err = refused([a.format(run=run_copy) for a in argv], capsys)
    assert "expected a path, got '" in err and ". for the current one" in err
    assert snapshot(run_copy) == before


# --- evaluate: sizes ---------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Every pass of ``evaluate`` fails the test: a refusal must come before them all."""
    import pyro_vae.cli.evaluate as cli_evaluate
    from pyro_vae import ais

    def work(*args, **kwargs):
        raise AssertionError("evaluate started work that should have been refused")

    for name in ("evaluate_dataset", "mean_elbo", "decompose_gap"):
        monkeypatch.setattr(cli_evaluate, name, work)
    monkeypatch.setattr(ais, "ais_dataset", work)
    monkeypatch.setattr(ais, "bdmc_dataset", work)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--num-samples", HUGE], f"--num-samples: expected an integer in [1, {MAX_NUM_SAMPLES}]"),
        (["--num-samples", str(MAX_NUM_SAMPLES + 1)], f", {MAX_NUM_SAMPLES}], got"),
        (["--num-samples", "1e20"], "--num-samples: expected an integer, got '1e20'"),
        (["--num-samples", "inf"], "--num-samples: expected an integer, got 'inf'"),
        (
            ["--naive-samples", HUGE],
            f"--naive-samples: expected an integer in [0, {MAX_NUM_SAMPLES}]",
        ),
        (["--ks", HUGE], f"--ks: expected integers <= 1048576, got '{HUGE}'"),
        (["--method", "ais", "--ais-steps", HUGE], f"in [1, {MAX_AIS_STEPS}], got {HUGE}"),
        (["--method", "ais", "--ais-chains", HUGE], f"an integer in [1, {MAX_AIS_CHAINS}], got"),
        (["--method", "ais", "--leapfrog-steps", HUGE], f"an integer in [1, {MAX_LEAPFROG_STEPS}]"),
        (["--method", "ais", "--ais-step-size", "nan"], "expected a number in (0, 1), got nan"),
        (["--method", "ais", "--ais-step-size", "inf"], "expected a number in (0, 1), got inf"),
        (["--bdmc", HUGE], f"--bdmc {HUGE} exceeds the 359 points of the test split"),
        (["--limit", HUGE], f"--limit {HUGE} exceeds the 359 points of the test split"),
        (["--limit", "360"], "--limit 360 exceeds the 359 points of the test split; ask for"),
        (["--batch-size", HUGE], f"--batch-size: expected an integer in [1, {MAX_BATCH_SIZE}]"),
        (["--gap-decomposition", "--gap-steps", HUGE], f"an integer in [0, {MAX_GAP_STEPS}]"),
        (
            ["--gap-decomposition", "--gap-points", HUGE],
            f"--gap-points {HUGE} exceeds the 359 points evaluated (the test split)",
        ),
        (
            ["--gap-decomposition", "--limit", "3", "--gap-points", "4"],
            "--gap-points 4 exceeds the 3 points evaluated (--limit 3); ask for fewer",
        ),
    ],
)
def test_evaluate_refuses_sizes_beyond_their_bounds(run_copy, capsys, no_work, options, words):
    before = snapshot(run_copy)
    err = refused(["evaluate", "--run", str(run_copy), "--no-progress", *options], capsys)
    assert words in err
    assert snapshot(run_copy) == before


# --- evaluate: options that need another --------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            ["--gap-points", "5"],
            "--gap-points sets the gap decomposition, which runs only with "
            "--gap-decomposition; add it or drop --gap-points",
        ),
        (["--gap-steps", "5"], "--gap-steps sets the gap decomposition"),
        (
            ["--method", "ais", "--ks", "1,5"],
            "--ks sets importance sampling, which --method ais does not run; use --method "
            "both to run it beside AIS, or drop --ks",
        ),
        (["--method", "ais", "--naive-samples", "5"], "--naive-samples sets importance sampling"),
        (["--method", "ais", "--num-samples", "5"], "--num-samples sets importance sampling"),
        (["--ais-chains", "3"], "--ais-chains sets annealed importance sampling"),
    ],
)
def test_evaluate_refuses_an_option_without_the_one_it_needs(
    run_copy, capsys, no_work, options, words
):
    before = snapshot(run_copy)
    err = refused(["evaluate", "--run", str(run_copy), *options], capsys)
    assert words in err
    assert snapshot(run_copy) == before


def _evaluate_args(*argv):
    return build_parser().parse_args(["evaluate", "--run", "r", *argv])


def test_evaluate_takes_an_option_with_the_one_it_needs():
    # --num-samples is the K of the gap decomposition's estimates, also under AIS
    args = _evaluate_args("--method", "ais", "--gap-decomposition", "--num-samples", "7")
    check_options(args)
    assert (args.num_samples, args.gap_steps) == (7, 500)
    args = _evaluate_args("--gap-decomposition", "--gap-points", "3", "--gap-steps", "0")
    check_options(args)
    assert (args.num_samples, args.gap_points, args.gap_steps) == (5000, 3, 0)


def test_evaluate_takes_every_point_there_is_and_fewer_gap_points_by_default():
    data = (np.zeros((359, 2)),)
    args = _evaluate_args("--limit", "359", "--gap-decomposition")
    check_sizes(data, args)
    assert args.gap_points == 100
    args = _evaluate_args("--limit", "40", "--gap-decomposition")
    check_sizes(data, args)
    assert args.gap_points == 40  # the default is at most the points evaluated
    with pytest.raises(UsageError, match="--limit 360 exceeds the 359 points"):
        check_sizes(data, _evaluate_args("--limit", "360"))


# --- complete ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_regressor(tmp_path_factory):
    """A regressor (one deterministic completion per condition) on 6 test points."""
    folder = tmp_path_factory.mktemp("tiny")
    images = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    np.savez(folder / "tiny.npz", x_train=images[:34], x_test=images[34:])
    args = ["train", "--dataset", f"npz:{folder / 'tiny.npz'}", "--model", "regressor"]
    args += ["--task", "quadrants-2", "--epochs", "1", "--batch-size", "10", "--hidden-dims", "8"]
    assert main([*args, "--no-progress", "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture
def regressor_copy(tiny_regressor, tmp_path):
    copy = tmp_path / "regressor"
    shutil.copytree(tiny_regressor, copy)
    return copy


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            ["-n", "3"],
            "-n: the completion of the regressor on task quadrants-2 in {run} is one "
            "deterministic mean, not a draw to repeat; drop -n",
        ),
        (["--inputs", "7"], "--inputs 7 exceeds the 6 conditions of the test split; ask for"),
    ],
)
def test_complete_refuses_what_the_run_cannot_draw(regressor_copy, capsys, options, words):
    before = snapshot(regressor_copy)
    err = refused(["complete", "--run", str(regressor_copy), *options], capsys)
    assert words.format(run=regressor_copy) in err
    assert snapshot(regressor_copy) == before


def test_complete_draws_every_condition_of_a_small_split_by_default(regressor_copy):
    # the default --inputs 8 is a most: all 6 conditions here, and no refusal
    assert main(["complete", "--run", str(regressor_copy)]) == 0
    assert (regressor_copy / "completions_test.png").is_file()
    assert main(["complete", "--run", str(regressor_copy), "--inputs", "6", "--force"]) == 0


# --- reproduce ---------------------------------------------------------------------------


@pytest.fixture
def no_experiment(monkeypatch, tmp_path):
    """``reproduce`` may run no experiment (and writes, if at all, under ``tmp_path``)."""
    from pyro_vae.cli import reproduce

    def run(*args, **kwargs):
        raise AssertionError("an experiment ran")

    monkeypatch.setattr(reproduce.subprocess, "run", run)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--only", ""], "argument --only: expected comma-separated names, got ''"),
        (["--only", " , "], "argument --only: expected comma-separated names, got ' , '"),
        (["--only", "ring,nope"], "unknown experiment(s) nope; valid: default_run, ring"),
        (["--only", "ring", "--threads", HUGE], f"--threads must be at most {MAX_THREADS}"),
        (["--only", "ring", "--jobs", HUGE], f"--jobs must be at most {MAX_JOBS}, got {HUGE}"),
        (["--only", "ring", "--threads", "0"], "--threads must be at least 1, got 0"),
        (["--only", "ring", "--threads", "2.5"], "--threads: expected an integer, got '2.5'"),
        (["--collect", "--threads", "2"], "--threads sets how experiments run, and --collect"),
        (["--collect", "--jobs", "2"], "--jobs sets how experiments run, and --collect runs none"),
    ],
)
def test_reproduce_refuses_before_any_experiment(capsys, no_experiment, tmp_path, options, words):
    err = refused(["reproduce", "--out", str(tmp_path / "out"), *options], capsys)
    assert words in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("collect", [[], ["--collect"]])
@pytest.mark.parametrize("where", ["file", "file/under"])
def test_reproduce_refuses_an_out_it_cannot_write_before_any_experiment(
    capsys, no_experiment, tmp_path, where, collect
):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / where
    err = refused(["reproduce", "--only", "ring", "--out", str(out), *collect], capsys)
    if collect:
        assert f"--collect: {out} is not a folder; give the --out of an earlier" in err
    else:
        assert f"--out {out} cannot hold the results (" in err
        assert "choose a folder you may write to" in err
    assert (tmp_path / "file").read_text() == "not a folder"


def _collected(tmp_path, results_json: str):
    out = tmp_path / "out"
    (out / "ring").mkdir(parents=True)
    (out / "ring" / "results.json").write_text(results_json)
    (out / "ring" / "results.md").write_text("| a | b |\n")
    return out


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "results.json is not JSON (Expecting property name"),
        ("", "results.json is not JSON (Expecting value"),
        ("[1, 2]", "results.json holds a list, not an object"),
        ("null", "results.json holds a NoneType, not an object"),
        ('"text"', "results.json holds a str, not an object"),
    ],
)
def test_reproduce_collect_names_a_results_file_it_cannot_read(
    capsys, no_experiment, tmp_path, text, words
):
    out = _collected(tmp_path, text)
    before = snapshot(out)
    err = refused(["reproduce", "--collect", "--only", "ring", "--out", str(out)], capsys)
    assert f"{out / 'ring' / words}" in err
    assert "rerun the experiment (`pyro-vae reproduce --only ring`)" in err
    assert snapshot(out) == before  # no results page of what could not be read


def test_reproduce_collect_needs_each_experiments_page(capsys, no_experiment, tmp_path):
    out = _collected(tmp_path, "{}")
    (out / "ring" / "results.md").unlink()
    err = refused(["reproduce", "--collect", "--only", "ring", "--out", str(out)], capsys)
    assert f"--collect: no results of ring in {out}; run them first" in err


@pytest.mark.parametrize(
    "results",
    [
        {"budget": "full", "wall_seconds": "long"},
        {"budget": {"epochs": "many"}, "wall_seconds": None},
        {"budget": None, "wall_seconds": [1]},
    ],
)
def test_reproduce_collect_takes_results_without_a_usable_budget(
    capsys, no_experiment, tmp_path, results
):
    out = _collected(tmp_path, json.dumps(results))
    assert main(["reproduce", "--collect", "--only", "ring", "--out", str(out)]) == 0
    page = (out / "results.md").read_text()
    assert "(expected; this run did not record it)" in page and "| a | b |" in page
    assert "--quick" in page  # nothing says how it was made: never published as full
