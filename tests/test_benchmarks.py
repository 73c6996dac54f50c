"""The benchmarks run and report what their documentation promises (no timing asserted:
speed is measured by running them, never by a test)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_train_step_reports_every_batch_size():
    out = run_benchmark("train_step.py", "--steps", "2", "--repeats", "1", "--batch-sizes", "8,16")
    assert [r["batch_size"] for r in out["by_batch_size"]] == [8, 16]
    first = out["by_batch_size"][0]
    # the top-level ratios are the first batch size's: step times over torch's
    assert out["fast_ratio"] == first["fast_ratio"]
    assert abs(out["fast_ratio"] - first["fast_ms"] / first["torch_ms"]) < 0.01
    assert abs(out["ratio"] - first["svi_ms"] / first["torch_ms"]) < 0.01


def test_evaluate_reports_the_fraction_of_the_matmul_limit():
    out = run_benchmark(
        "evaluate.py",
        *("--images", "4", "--num-samples", "60", "--sizes", "small,burda"),
        *("--threads", "1", "--memory-ks", "20", "--memory-images", "2"),
        *("--ais-steps", "4", "--ais-chains", "2", "--ais-leapfrog", "2"),
        *("--ais-images", "4", "--ais-block", "2"),
    )
    assert [(c["size"], c["threads"]) for c in out["cases"]] == [("small", 1), ("burda", 1)]
    first = out["cases"][0]
    assert out["ratio_vs_torch"] == first["ratio_vs_torch"]
    assert out["fraction_of_matmul_limit"] == first["fraction_of_matmul_limit"]
    for case in out["cases"]:
        assert case["fraction_of_matmul_limit"] > 0 and case["matmul_gflops"] > 0
        # ours and torch estimate the same log P(x) from independent samples
        diff = case["diff_vs_torch"]
        assert abs(diff["mean"]) <= 5 * diff["stderr"] + 0.05, diff
    assert set(out["peak_memory_mb_by_k"]) == {"20"}
    (ais,) = out["ais_cases"]
    assert (ais["size"], ais["threads"], ais["steps"], ais["block"]) == ("small", 1, 4, 2)
    assert out["ais_ratio_vs_torch"] == ais["ratio_vs_torch"]
    assert ais["fraction_of_matmul_limit"] > 0 and ais["matmul_gflops"] > 0


def test_breakdown_names_every_part():
    out = run_benchmark(
        "breakdown.py", "--repeats", "1", "--num-samples", "40", "--batch-size", "16"
    )
    assert list(out["train"]["rows"]) == [
        "networks forward",
        "log-densities forward",
        "Pyro: tracing and bookkeeping",
        "backward",
        "optimizer and the engine's step",
        "data handling",
    ]
    assert list(out["evaluate"]["rows"]) == [
        "decoder matrix products",
        "decoder, the rest",
        "encoder",
        "sampling z",
        "log-densities",
        "accumulate",
        "Pyro: tracing and bookkeeping, and the rest",
    ]
    assert out["evaluate"]["fraction_of_matmul_limit"] > 0
