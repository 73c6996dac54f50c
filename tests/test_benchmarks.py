"""The benchmarks run and report what their documentation promises (no timing asserted:
speed is measured by running them, never by a test). Every derived number is checked
against the raw numbers it comes from, and every count of floating-point operations
against the layer sizes written out here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the decoders' layer sizes (input, output) of the benchmarks' ``--sizes``: the small
#: 784-400-20 VAE and Burda et al.'s 784-200-200-50 network, Bernoulli logits out
DECODER_LAYERS = {
    "small": [(20, 400), (400, 784)],
    "burda": [(50, 200), (200, 200), (200, 784)],
}


def decoder_gflop(size: str, rows: int = 1) -> float:
    """Floating-point operations of the decoder's matrix products on ``rows`` rows:
    2 per multiply-add."""
    return sum(2 * rows * i * o for i, o in DECODER_LAYERS[size]) / 1e9


def assert_ratio(reported, num, den, step, digits):
    """``reported``, rounded to ``digits`` decimals, is ``num / den`` of two numbers
    that were themselves rounded to multiples of ``step``: within the range of the
    quotient over their rounding intervals."""
    half = step / 2
    assert den - half > 0, f"{den} is too small to divide by after rounding to {step}"
    low, high = (num - half) / (den + half), (num + half) / (den - half)
    slack = 0.5 * 10**-digits
    assert low - slack <= reported <= high + slack, (reported, num, den)


def run_benchmark(name: str, *args: str, out: Path | None = None) -> dict:
    """Run ``benchmarks/NAME`` and return the JSON it prints last; with ``out``, also
    check that ``--out`` kept the same result, with the command that measured it."""
    extra = ["--out", str(out)] if out else []
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.splitlines()[-1])
    if out:
        kept = json.loads(out.read_text())
        measured = kept.pop("measured")
        assert kept == printed
        assert measured["command"] == " ".join(["python", f"benchmarks/{name}", *args, *extra])
        assert measured["cores"] == os.cpu_count() and measured["versions"]["torch"]
    return printed


def md_tables(path: Path) -> list[list[list[str]]]:
    """The tables of a Markdown file: rows of cells, the header and rule left out."""
    tables, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if not lines[i - 1].startswith("|"):
                tables.append([])
            tables[-1].append([c.strip() for c in line.strip("|").split("|")])
    return [t[2:] for t in tables]


def test_out_must_be_a_json_file_in_a_folder_that_exists(tmp_path):
    for out, message in (
        (tmp_path / "r.txt", "ending in .json"),
        (tmp_path / "no/r.json", "exist"),
    ):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not out.exists()


def test_train_step_reports_every_batch_size(tmp_path):
    out = run_benchmark(
        "train_step.py",
        *("--steps", "2", "--repeats", "1", "--batch-sizes", "8,16"),
        out=tmp_path / "train_step.json",
    )
    rows = out["by_batch_size"]
    # the kept table is the JSON's rows, as printed
    (table,) = md_tables(tmp_path / "train_step.md")
    columns = ("batch_size", "svi_ms", "fast_ms", "torch_ms", "ratio", "fast_ratio")
    assert [[float(c) for c in row] for row in table] == [
        [*(r[k] for k in columns), round(r["data_epoch_ms"], 2)] for r in rows
    ]
    assert [r["batch_size"] for r in rows] == [8, 16]
    for r in rows:
        # the ratios are the step times over torch's, the times medians of their range
        assert_ratio(r["fast_ratio"], r["fast_ms"], r["torch_ms"], 1e-3, 3)
        assert_ratio(r["ratio"], r["svi_ms"], r["torch_ms"], 1e-3, 3)
        for engine in ("svi", "fast", "torch"):
            low, high = r["range_ms"][engine]
            assert 0 < low <= r[f"{engine}_ms"] <= high
    # the top-level ratios are the first batch size's, from its step times
    first = rows[0]
    assert_ratio(out["fast_ratio"], first["fast_ms"], first["torch_ms"], 1e-3, 3)
    assert_ratio(out["ratio"], first["svi_ms"], first["torch_ms"], 1e-3, 3)


def test_evaluate_reports_the_fraction_of_the_matmul_limit(tmp_path):
    k = 60
    out = run_benchmark(
        "evaluate.py",
        *("--images", "4", "--num-samples", str(k), "--sizes", "small,burda"),
        *("--threads", "1", "--memory-ks", "20", "--memory-images", "2"),
        *("--ais-steps", "4", "--ais-chains", "2", "--ais-leapfrog", "2"),
        *("--ais-images", "4", "--ais-block", "2"),
        out=tmp_path / "evaluate.json",
    )
    speed, ais_table, memory, diffs = md_tables(tmp_path / "evaluate.md")
    assert [(row[0], float(row[2])) for row in speed] == [
        ("784-400-20", out["cases"][0]["images_per_s"]),
        ("784-200-200-50", out["cases"][1]["images_per_s"]),
    ]
    assert float(ais_table[0][2]) == round(out["ais_cases"][0]["seconds_per_image"], 3)
    assert float(memory[0][1]) == out["peak_memory_mb_by_k"]["20"]["peak_mb"]
    assert len(diffs) == 2
    assert [(c["size"], c["threads"]) for c in out["cases"]] == [("small", 1), ("burda", 1)]
    for case in out["cases"]:
        ours, torch_, limit = (case[f"{name}images_per_s"] for name in ("", "torch_", "limit_"))
        # time ratios are inverse ratios of the speeds (images per second, 2 decimals)
        assert_ratio(case["ratio_vs_torch"], torch_, ours, 0.01, 3)
        assert_ratio(case["fraction_of_matmul_limit"], ours, limit, 0.01, 3)
        per_point = case["per_point_images_per_s"]
        assert_ratio(case["per_point_fraction_of_matmul_limit"], per_point, limit, 0.01, 3)
        # the limit's rate: K decoder passes per image at the speed of the limit
        gflops = decoder_gflop(case["size"]) * k * limit
        assert case["matmul_gflops"] == pytest.approx(gflops, rel=1e-3, abs=0.06)
        assert 0 < case["fraction_of_matmul_limit"] and case["matmul_gflops"] > 0
        # ours and torch estimate the same log P(x) from independent samples
        diff = case["diff_vs_torch"]
        assert abs(diff["mean"]) <= 5 * diff["stderr"] + 0.05, diff
    # the top level repeats the first case: its speeds give its ratios
    first = out["cases"][0]
    assert out["images_per_s"] == first["images_per_s"]
    assert_ratio(out["ratio_vs_torch"], first["torch_images_per_s"], first["images_per_s"], 0.01, 3)
    assert_ratio(
        out["fraction_of_matmul_limit"], first["images_per_s"], first["limit_images_per_s"], 0.01, 3
    )
    assert set(out["peak_memory_mb_by_k"]) == {"20"}
    (ais,) = out["ais_cases"]
    assert (ais["size"], ais["threads"], ais["steps"], ais["block"]) == ("small", 1, 4, 2)
    seconds = {name: ais[f"{name}seconds_per_image"] for name in ("", "torch_", "limit_")}
    # seconds per image have 4 decimals
    assert_ratio(ais["ratio_vs_torch"], seconds[""], seconds["torch_"], 1e-4, 3)
    assert_ratio(ais["fraction_of_matmul_limit"], seconds["limit_"], seconds[""], 1e-4, 3)
    # an AIS run evaluates the gradient at steps + (steps - 1) * leapfrog points, each a
    # pass of the decoder forward and one back to its input, for every chain and image
    passes = 4 + 3 * 2
    gflop = 2 * decoder_gflop("small") * passes * ais["chains"]
    assert_ratio(ais["matmul_gflops"], gflop, seconds["limit_"], 1e-4, 1)
    assert out["ais_ratio_vs_torch"] == ais["ratio_vs_torch"]
    assert out["ais_fraction_of_matmul_limit"] == ais["fraction_of_matmul_limit"]


def test_breakdown_names_every_part_and_the_parts_add_up(tmp_path):
    out = run_benchmark(
        "breakdown.py",
        *("--repeats", "1", "--num-samples", "40", "--batch-size", "16"),
        out=tmp_path / "breakdown.json",
    )
    for table, part in zip(
        md_tables(tmp_path / "breakdown.md"), ("train", "evaluate"), strict=True
    ):
        rows = out[part]["rows"]
        assert [row[0] for row in table] == [*rows, "**total**"]
        assert [float(row[1]) for row in table[:-1]] == [round(v[0], 3) for v in rows.values()]
    train, evaluate = out["train"], out["evaluate"]
    assert list(train["rows"]) == [
        "networks forward",
        "log-densities forward",
        "Pyro: tracing and bookkeeping",
        "backward",
        "optimizer and the engine's step",
        "data handling",
    ]
    assert list(evaluate["rows"]) == [
        "decoder matrix products",
        "decoder, the rest",
        "encoder",
        "sampling z",
        "log-densities",
        "accumulate",
        "Pyro: tracing and bookkeeping, and the rest",
    ]
    # each column of parts adds up to its total, ours and the hand-written torch's
    for profile in (train, evaluate):
        for column in (0, 1):
            parts = sum(v[column] for v in profile["rows"].values())
            assert parts == pytest.approx(profile["total"][column], rel=1e-9)
    # an evaluator chunk: 2048 pairs of 100 images, so 20 particles each, two chunks for
    # K = 40; the limit is the share of the decoder's products in a chunk's time
    assert (evaluate["particles"], evaluate["chunks"]) == (20, 2)
    assert evaluate["decoder_gflop_per_chunk"] == pytest.approx(decoder_gflop("small", 2000))
    products = evaluate["rows"]["decoder matrix products"][0]
    assert evaluate["fraction_of_matmul_limit"] == pytest.approx(
        products / evaluate["total"][0], rel=1e-9
    )
    assert 0 < evaluate["fraction_of_matmul_limit"] < 1


def test_speedups_gives_each_configuration_its_ratio_to_torch_with_the_same_adam(tmp_path):
    out = run_benchmark(
        "speedups.py",
        *("--repeats", "1", "--steps", "2", "--batch-size", "8", "--eval-samples", "20"),
        out=tmp_path / "speedups.json",
    )
    configs = ["as before", "+ fused Adam", "+ no param-store lookups", "+ log q from the noise"]
    configs.append("+ fused Bernoulli")
    assert list(out["train_ms"]) == [*configs, "torch, default Adam", "torch, fused Adam"]
    train, evaluate = md_tables(tmp_path / "speedups.md")
    # the first configuration is held to torch's default Adam, every later one to fused
    for row, name in zip(train, configs, strict=False):
        baseline = "torch, default Adam" if name == "as before" else "torch, fused Adam"
        assert row[0] == name and float(row[1]) == out["train_ms"][name]
        assert_ratio(float(row[2]), out["train_ms"][name], out["train_ms"][baseline], 1e-3, 3)
    assert [row[0] for row in evaluate] == ["as before", "+ log q from the noise", configs[-1]]
    for row in evaluate:
        ms = out["eval_ms_per_image"][row[0]]
        assert [float(c) for c in row[1:]] == [round(ms["batched"], 2), round(ms["per_point"], 2)]


def test_distributed_times_one_process_against_two_and_splits_a_step(tmp_path):
    out = run_benchmark(
        "distributed.py",
        *("--images", "4", "--num-samples", "20", "--steps", "2", "--batch-size", "8"),
        *("--repeats", "1"),
        out=tmp_path / "distributed.json",
    )
    # one and two processes score the same points from the same streams
    assert len(out["eval_log_px_mean"]) == 1
    rates, steps = out["eval_images_per_s"], out["train_step_ms"]
    assert_ratio(out["eval_speedup"], rates["2"], rates["1"], 0.01, 3)
    assert_ratio(out["train_speedup"], steps["1"], steps["2"], 0.01, 3)
    # the 784-400-20 VAE: encoder 784-400-(20 + 20), decoder 20-400-784, with biases
    parameters = 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784
    assert out["parameters"] == parameters
    assert out["gradient_mb"] == pytest.approx(parameters * 4 / 2**20, abs=1e-3)
    speed, split = md_tables(tmp_path / "distributed.md")
    assert [float(c) for c in speed[0][1:3]] == [round(rates["1"], 1), round(rates["2"], 1)]
    assert [float(c) for c in speed[1][1:3]] == [round(steps["1"], 1), round(steps["2"], 1)]
    assert float(split[0][1]) == round(out["share_step_ms"], 1)
    assert float(split[-1][1]) == round(steps["2"], 1)
