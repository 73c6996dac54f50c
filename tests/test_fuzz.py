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
import contextlib
import hashlib
import io
import json
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

#: examples per subcommand beyond the exhaustive pass: about a second each
EXAMPLES = 15

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def flags(command: str) -> list[argparse.Action]:
    """The options of ``pyro-vae COMMAND`` (not ``--help``)."""
    return [a for a in subparser(command)._actions if a.option_strings and a.dest != "help"]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


#: what each command needs before the fuzzed option (the option comes last and wins)
REQUIRED = {"train": [], "sample": ["--run", "r"], "evaluate": ["--run", "r"]}
REQUIRED |= {"complete": ["--run", "r"], "reproduce": []}


def pairs(command: str) -> list[tuple[str, str | None]]:
    """Every (flag, bad value) of ``command``; a switch once, without a value."""
    return [
        (action.option_strings[-1], value)
        for action in flags(command)
        for value in ((None,) if action.nargs == 0 else BAD)
    ]


def typed(flag: str, value: str | None) -> list[str]:
    """``flag value`` as typed: a switch alone, and ``flag=value`` for a flag whose value
    is optional (``--tensorboard [DIR]``: argparse leaves ``-1`` after it unparsed)."""
    if value is None:
        return [flag]
    return [f"{flag}={value}"] if flag in OPTIONAL_VALUE else [flag, value]


def parses(command: str, flag: str, value: str | None) -> bool:
    """Whether the parser takes ``flag value``; a refusal must be one line and exit 2."""
    argv = [command, *REQUIRED[command], *typed(flag, value)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            PARSER.parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2, (argv, err.getvalue())
        assert err.getvalue().count("\n") == 1, (argv, err.getvalue())
        assert err.getvalue().startswith(f"pyro-vae {command}: error: "), err.getvalue()
        return False
    return True


PARSER = build_parser()
#: the flags whose value may be left out
OPTIONAL_VALUE = {f for c in REQUIRED for a in flags(c) if a.nargs == "?" for f in a.option_strings}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_the_parser_refuses_in_one_line_or_parses(command):
    taken = [pair for pair in pairs(command) if parses(command, *pair)]
    # what the parser takes is what the commands below are fuzzed with; numbers
    # out of range never reach a command
    for flag, value in taken:
        assert value not in ("nan", "inf", "-inf", "1e308") or flag in TEXT, (flag, value)


#: options whose value is any text: a path, a name, a device, a list of names
FREE_TEXT = {"--out", "--data-dir", "--dataset", "--device", "--run-dir", "--only"}
#: and ``--plugin``, a module to import: fuzzed with the bad values only, since any text
#: may name a module of the standard library that does something when imported; and
#: ``--tensorboard``, a folder to write, with the bad values only (relative paths that
#: land in the scratch folder)
TEXT = FREE_TEXT | {"--plugin", "--tensorboard"}


def accepted(command: str) -> list[tuple[str, str | None]]:
    """The (flag, bad value) pairs of ``command`` that its parser takes."""
    return [pair for pair in pairs(command) if parses(command, *pair)]


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


ACCEPTED = {command: accepted(command) for command in ("train", "sample", "evaluate", "complete")}


def _kinds(flag: str) -> list[str]:
    """The models that take ``flag`` (every option not of a model: the VAE)."""
    dest = next(a.dest for a in flags("train") if flag in a.option_strings)
    return model_options().get(dest, (None, ["vae"]))[1]


def train(flag: str, value: str | None, kind: str, capsys, monkeypatch) -> None:
    """``pyro-vae train`` of a tiny ``kind`` run with ``flag value`` last: exit 0 or 2,
    and nothing written anywhere on a refusal."""
    with tempfile.TemporaryDirectory() as scratch:
        monkeypatch.chdir(scratch)  # a relative --out lands here
        needed = [
            arg
            for o in MODELS[kind].options
            if o.required
            for arg in (o.flag, o.choices[-1] if o.choices else "1")
        ]
        argv = ["train", *FAST, "--epochs", "1", "--no-progress", "--model", kind, *needed]
        argv += ["--out", str(Path(scratch) / "run"), *typed(flag, value)]
        status, err = status_and_err(argv, capsys)
        check(argv, status, err)
        if status == 2:
            assert not list(Path(scratch).iterdir())


#: the commands that read a run, and what keeps them cheap
ON_A_RUN = {
    "sample": ["--out", "{scratch}/s.png", "-n", "4"],
    "complete": ["--out", "{scratch}/c.png", "--inputs", "2", "-n", "2"],
    "evaluate": ["--limit", "4", "--num-samples", "2", "--naive-samples", "0", "--no-progress"],
}


def on_a_run(command: str, flag: str, value, source: Path, capsys) -> None:
    """``pyro-vae COMMAND`` on a copy of the run in ``source`` with ``flag value`` last:
    exit 0 or 2, and the run folder as it was on a refusal. ``value`` may be a function
    of the copy's folder."""
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        shutil.copytree(source, run)
        value = value(run) if callable(value) else value
        base = [a.format(scratch=scratch) for a in ON_A_RUN[command]]
        argv = [command, "--run", str(run), *base, "--force"]
        argv += typed(flag, value)
        before = contents(run)
        status, err = status_and_err(argv, capsys)
        check(argv, status, err)
        if status == 2:
            assert contents(run) == before


@pytest.fixture(scope="module")
def runs(digits_run, cvae_run):
    return {"sample": digits_run, "evaluate": digits_run, "complete": cvae_run}


# every pair the parser takes reaches its command, once each


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.RunWarning")
@pytest.mark.parametrize(("flag", "value"), ACCEPTED["train"])
def test_train_with_every_bad_value_its_parser_takes(flag, value, capsys, monkeypatch):
    train(flag, value, _kinds(flag)[0], capsys, monkeypatch)


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.RunWarning")
@pytest.mark.parametrize(
    ("command", "flag", "value"), [(c, *pair) for c in ON_A_RUN for pair in ACCEPTED[c]]
)
def test_commands_on_a_run_with_every_bad_value_their_parsers_take(
    command, flag, value, runs, capsys
):
    on_a_run(command, flag, value, runs[command], capsys)


# and Hypothesis looks further: any text where an option takes text, a run's own
# files, and every model that takes an option

OWN = ("checkpoint.pt", "config.json", "history.json", "results.json")


def _text(data, flag: str, value):
    if flag not in FREE_TEXT or not data.draw(st.booleans(), label="other text"):
        return value
    own = st.sampled_from(OWN).map(lambda name: lambda run: str(run / name))
    return data.draw(own | st.text(min_size=1, max_size=8), label="text")


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.RunWarning")
@FUZZ
@given(data=st.data())
def test_train_fuzzed(data, capsys, monkeypatch):
    flag, value = data.draw(st.sampled_from(ACCEPTED["train"]), label="pair")
    value = _text(data, flag, value)
    value = value(Path("run")) if callable(value) else value
    kind = data.draw(st.sampled_from(_kinds(flag)), label="model")
    train(flag, value, kind, capsys, monkeypatch)


@pytest.mark.filterwarnings("ignore::pyro_vae.errors.RunWarning")
@pytest.mark.parametrize("command", sorted(ON_A_RUN))
@FUZZ
@given(data=st.data())
def test_commands_on_a_run_fuzzed(command, data, runs, capsys):
    flag, value = data.draw(st.sampled_from(ACCEPTED[command]), label="pair")
    on_a_run(command, flag, _text(data, flag, value), runs[command], capsys)


# --- damaged run folders ----------------------------------------------------------------


def _edit_config(change):
    def damage(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(change(config)))

    return damage


def _flip_weights(run: Path) -> None:
    data = bytearray((run / "checkpoint.pt").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = bytes(b ^ 0x5A for b in data[middle : middle + 4000])
    (run / "checkpoint.pt").write_bytes(bytes(data))


def _replace_model(**model):
    return _edit_config(lambda c: {**c, "model": {**c["model"], **model}})


#: faults a run folder meets: edited, truncated or flipped files
FAULTS = {
    "config is a list": lambda run: (run / "config.json").write_text("[]"),
    "config is null": lambda run: (run / "config.json").write_text("null"),
    "config is a string": lambda run: (run / "config.json").write_text('"run"'),
    "config is cut short": lambda run: (run / "config.json").write_text('{"format": "pyro'),
    "config is binary": lambda run: (run / "config.json").write_bytes(b"\xff\xfe\x00"),
    "model is a list": _edit_config(lambda c: {**c, "model": []}),
    "data is a string": _edit_config(lambda c: {**c, "data": "digits"}),
    "train is null": _edit_config(lambda c: {**c, "train": None}),
    "z_dim is text": _replace_model(z_dim="abc"),
    "z_dim is negative": _replace_model(z_dim=-3),
    "image shape does not fit": _replace_model(image_shape=[3, 5]),
    "likelihood edited": _replace_model(likelihood={"name": "gaussian", "sigma": 0.1}),
    "epochs is text": _edit_config(lambda c: {**c, "train": {**c["train"], "epochs": "two"}}),
    "checkpoint cut short": lambda run: (run / "checkpoint.pt").write_bytes(
        (run / "checkpoint.pt").read_bytes()[:5000]
    ),
    "checkpoint bytes flipped": _flip_weights,
    "checkpoint empty": lambda run: (run / "checkpoint.pt").write_bytes(b""),
}

COMMANDS = {
    "sample": ["sample", "-n", "4"],
    "evaluate": ["evaluate", "--limit", "4", "--num-samples", "2", "--no-progress"],
    "resume": ["train", "--resume", "--epochs", "3", "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_damaged_run_folder_is_one_line_and_stays_as_it_was(
    fault, command, digits_run, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    FAULTS[fault](run)
    before = contents(run)
    argv = COMMANDS[command][:1] + (["--out"] if command == "resume" else ["--run"])
    argv += [str(run), *COMMANDS[command][1:]]
    status, err = status_and_err(argv, capsys)
    assert status == 2, f"{fault}: pyro-vae {' '.join(argv)} exited {status}: {err}"
    check(argv, status, err)
    assert contents(run) == before
