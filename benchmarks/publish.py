"""Run every benchmark with the settings the documentation quotes, and publish the results.

Each benchmark runs in its own process, one after another (never two at once: they
would share the cores and time each other), and writes ``benchmarks/results/NAME.json``
and ``NAME.md`` with ``--out``. Then the speed numbers and tables of the README and of
``docs/`` are rewritten from them (``python -m pyro_vae.cli.published --write``).

Run it on an otherwise idle machine; it takes about 25 minutes on 2 CPU cores.

Usage: ``python benchmarks/publish.py [--only NAME,...] [--list]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

#: result name: (script, its arguments). The pages quote these settings.
RUNS: dict[str, tuple[str, list[str]]] = {
    "train_step": ("train_step.py", ["--repeats", "15", "--steps", "30"]),
    "train_step_iaf": ("train_step.py", ["--model", "iaf"]),
    "train_step_hvae": ("train_step.py", ["--model", "hvae"]),
    "speedups": ("speedups.py", ["--repeats", "15"]),
    "breakdown": ("breakdown.py", []),
    "breakdown_burda": (
        "breakdown.py",
        ["--size", "burda", "--threads", "2", "--parts", "evaluate"],
    ),
    "evaluate": ("evaluate.py", []),
    "distributed": ("distributed.py", ["--images", "500", "--repeats", "5"]),
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and rewrite the pages' numbers.

    :param argv: command-line arguments.
    :returns: the exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated result names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    args = parser.parse_args(argv)
    names = list(RUNS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown result name {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        script, extra = RUNS[name]
        out = RESULTS.relative_to(ROOT) / f"{name}.json"
        command = [sys.executable, f"benchmarks/{script}", *extra, "--out", str(out)]
        print(f"{name}: python benchmarks/{script} {' '.join(extra)} --out {out}", flush=True)
        if args.list:
            continue
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            print(f"{name} failed (exit status {proc.returncode})", file=sys.stderr)
            return 1
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    if args.list:
        return 0
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli.published", "--write"], cwd=ROOT, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
