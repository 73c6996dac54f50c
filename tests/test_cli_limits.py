"""Sizes, option dependencies and paths that a careless or hostile command line gives
``pyro-vae evaluate``, ``sample``, ``complete`` and ``reproduce``: each is refused with
exit status 2 and one line naming the problem and the fix, before any work, and the run
folder is left as it was (the same files, byte for byte)."""

import pytest
from test_cli_paths import refused


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
    assert "expected a path, got '" in err and "write . for the current folder" in err
    assert snapshot(run_copy) == before
