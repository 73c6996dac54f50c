"""The tutorial notebook (docs/tutorial.ipynb) runs from top to bottom, and the copy in
the repository holds the outputs the docs site shows."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
#: seconds a cell may run: the whole notebook takes about a minute on 2 CPU cores
CELL_TIMEOUT = 600
#: figures the notebook draws: curves, samples, the sigma sweep, the bounds, completions
FIGURES = 5


def images(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run by nbclient in a fresh kernel, in a folder of its own."""
    folder = tmp_path_factory.mktemp("notebook")
    shutil.copyfile(NOTEBOOK, folder / NOTEBOOK.name)
    notebook = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    for cell in notebook.cells:  # run from a clean slate, not from the committed outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # a failing cell (its asserts included) raises CellExecutionError here
    NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return notebook


def test_the_notebook_runs_and_draws_every_figure(executed):
    assert images(executed) == FIGURES
    text = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "by hand:" in text and "pyro_vae: ELBO" in text and "z from the prior" in text


def test_the_committed_notebook_shows_its_outputs():
    # the docs site renders the committed notebook as it is: every code cell ran, in
    # order, none failed, and the figures are there
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert images(notebook) == FIGURES
