"""The Python examples in README.md and docs/ run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


EXAMPLES = [page for page in PAGES if python_blocks(page)]


def test_the_pages_have_examples():
    names = {page.name for page in EXAMPLES}
    assert {"README.md", "guide.md", "index.md", "likelihoods.md", "evaluation.md"} <= names


@pytest.mark.parametrize("page", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    from pyro_vae.models import MODELS

    monkeypatch.chdir(tmp_path)  # examples may write files
    registered = dict(MODELS)  # an example may register a model of its own
    namespace: dict = {}
    try:
        for block in python_blocks(page):  # blocks on one page build on each other
            exec(compile(block, f"{page.name}", "exec"), namespace)
    finally:
        MODELS.clear()
        MODELS.update(registered)
