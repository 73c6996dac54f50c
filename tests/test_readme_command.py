"""The README's first command prints the numbers the README gives for it: those of
docs/results/default_run/, which ``experiments/default_run.py`` wrote by running it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "results" / "default_run" / "results.json"
#: the README writes ELBOs to 0.01 nats: the same run may differ by one in the last digit
PRINTED_NATS = 0.011


def test_the_readme_names_the_command_the_results_were_made_with():
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/pyro-vae train\n" in readme  # the first command, with no options


def test_the_first_command_prints_the_readmes_numbers(tmp_path):
    published = json.loads(PUBLISHED.read_text())["runs"]["mlp"]
    threads = json.loads(PUBLISHED.read_text())["threads"]
    if os.cpu_count() != threads:
        pytest.skip(
            f"the published run used {threads} threads (PyTorch's default on its "
            f"{threads} cores) and this machine would use {os.cpu_count()}: training "
            "rounds differently, which 50 epochs grow"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = dict(re.findall(r"^\| (train|test) \| (-?\d+\.\d+) \|$", done.stdout, re.MULTILINE))
    assert float(printed["train"]) == pytest.approx(published["train_elbo"], abs=PRINTED_NATS)
    assert float(printed["test"]) == pytest.approx(published["test_elbo"], abs=PRINTED_NATS)
