"""The Python examples in README.md and docs/ run as written."""

import contextlib
import re
from pathlib import Path

import pytest
from conftest import UNRELIABLE

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


EXAMPLES = [page for page in PAGES if python_blocks(page)]
#: the warning (pyro_vae.errors.UnreliableWeights) that pages provoke whose examples
#: evaluate models trained for seconds: their importance weights are heavy-tailed for many
#: points. evaluation.md calls the library, which warns; guide.md the command line, which
#: prints the warning as one line
HEAVY_TAILS = "the Pareto k-hat of the importance weights is above 0.7"
WARNS = {"evaluation.md"}
PRINTS = {"guide.md"}


def example(page: Path):
    marks = [pytest.mark.filterwarnings(UNRELIABLE)] if page.name in PRINTS else []
    return pytest.param(page, id=page.name, marks=marks)


def test_the_pages_have_examples():
    names = {page.name for page in EXAMPLES}
    assert {"README.md", "guide.md", "index.md", "likelihoods.md", "evaluation.md"} <= names


@pytest.mark.parametrize("page", [example(page) for page in EXAMPLES])
def test_examples_run(page, tmp_path, monkeypatch, capsys):
    from pyro_vae import errors
    from pyro_vae.models import MODELS

    monkeypatch.chdir(tmp_path)  # examples may write files
    registered = dict(MODELS)  # an example may register a model of its own
    namespace: dict = {}
    warns = (
        pytest.warns(errors.UnreliableWeights, match=HEAVY_TAILS)
        if page.name in WARNS
        else contextlib.nullcontext()
    )
    try:
        with warns:
            for block in python_blocks(page):  # blocks on one page build on each other
                exec(compile(block, f"{page.name}", "exec"), namespace)
    finally:
        MODELS.clear()
        MODELS.update(registered)
    if page.name in PRINTS:
        assert f"pyro-vae: warning: {HEAVY_TAILS}" in capsys.readouterr().err
