"""Every command and every flag against values a hostile user types (negative, zero,
huge, NaN, inf, empty, the wrong type, an unknown choice, a run's own files): the
command exits 0 or 2, never with a traceback; a refusal is one line on standard error;
and a refused command changes nothing in the run folder.

The flags are read from the parser itself, so a flag added later is fuzzed too.
Hypothesis draws (flag, value) pairs, derandomized so that CI sees the same examples
every time; each subcommand gets a fixed number of examples to keep the whole file
within a couple of minutes.
"""

import argparse
import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import FAST
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae.cli import build_parser, main
from pyro_vae.cli.train import model_options
from pyro_vae.models import MODELS

#: what a hostile user types where a number, a name or a path belongs
BAD = (
    "-1",
    "0",
    "-0",
    "1.5",
    "99999999999999999999",
    "1e20",
    "1e308",
    "1e-320",
    "nan",
    "inf",
    "-inf",
    "",
    " ",
    "abc",
    "0x10",
    "1,,2",
    "-5,3",
    "😀",
)

#: examples per subcommand: about a second each where the values are accepted
EXAMPLES = 40

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def flags(command: str) -> list[argparse.Action]:
    """The options of ``pyro-vae COMMAND`` (not ``--help``)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions if a.option_strings and a.dest != "help"]


def values(action: argparse.Action, run: Path) -> st.SearchStrategy:
    """Bad values for ``action``: the list above, any text, and for a path the run's
    own files."""
    if action.nargs == 0:  # a switch: present or not
        return st.just(None)
    own = [str(run / name) for name in ("checkpoint.pt", "config.json", "history.json")]
    return st.sampled_from(BAD + tuple(own)) | st.text(max_size=8)


def contents(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def status_and_err(argv, capsys) -> tuple[int, str]:
    """``pyro-vae ARGV``'s exit status and standard error; an exception other than the
    parser's exit fails the test with its traceback."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


def check(argv, status: int, err: str) -> None:
    assert status in (0, 2), f"pyro-vae {' '.join(map(repr, argv))} exited {status}: {err}"
    if status == 2:
        lines = [line for line in err.splitlines() if "warning:" not in line]
        assert len(lines) == 1, f"pyro-vae {argv!r}: {err}"
        assert lines[0].startswith("pyro-vae"), err
        assert "Traceback" not in err


def _option(data, run: Path, command: str) -> tuple[str, list[str]]:
    action = data.draw(st.sampled_from(flags(command)), label="flag")
    value = data.draw(values(action, run), label="value")
    return action.dest, [action.option_strings[-1], *([] if value is None else [value])]


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.RunWarning")
@FUZZ
@given(data=st.data())
def test_train(data, capsys, monkeypatch):
    with tempfile.TemporaryDirectory() as scratch:
        monkeypatch.chdir(scratch)  # a relative --out lands here
        out = Path(scratch) / "run"
        dest, option = _option(data, out, "train")
        # a model that takes the option, and the options that model needs
        kinds = model_options().get(dest, (None, ["vae"]))[1]
        kind = data.draw(st.sampled_from(kinds), label="model")
        needed = [
            arg
            for o in MODELS[kind].options
            if o.required
            for arg in (o.flag, o.choices[-1] if o.choices else "1")
        ]
        argv = ["train", *FAST, "--epochs", "1", "--no-progress", "--model", kind, *needed]
        argv += ["--out", str(out), *option]
        status, err = status_and_err(argv, capsys)
        check(argv, status, err)
        if status == 2:  # nothing written anywhere
            assert not list(Path(scratch).iterdir())


@pytest.fixture(scope="module")
def runs(digits_run, cvae_run):
    return {"sample": digits_run, "evaluate": digits_run, "complete": cvae_run}


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.RunWarning")
@pytest.mark.parametrize("command", ["sample", "complete", "evaluate"])
@FUZZ
@given(data=st.data())
def test_commands_on_a_run(command, data, runs, capsys):
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        shutil.copytree(runs[command], run)
        _, option = _option(data, run, command)
        base = {
            "sample": ["--out", str(Path(scratch) / "s.png"), "-n", "4"],
            "complete": ["--out", str(Path(scratch) / "c.png"), "--inputs", "2", "-n", "2"],
            "evaluate": ["--limit", "4", "--num-samples", "2", "--naive-samples", "0"],
        }[command]
        argv = [command, "--run", str(run), *base, "--force", *option]
        if command == "evaluate":
            argv.append("--no-progress")
        before = contents(run)
        status, err = status_and_err(argv, capsys)
        check(argv, status, err)
        if status == 2:
            assert contents(run) == before
