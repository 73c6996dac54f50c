"""Numbers and tables marked in Markdown are checked against, and rewritten from, the
results files they name (pyro_vae.cli.published)."""

import json
from pathlib import Path

import pytest

from pyro_vae.cli.published import main, pages, refresh
from pyro_vae.errors import UsageError

RESULTS = {
    "rows": [
        {"name": "standard", "log_px": {"mean": -104.7912, "stderr": 0.0712}},
        {"name": "vamp", "log_px": {"mean": -101.0499, "stderr": 0.2}},
    ],
    "count": 12345,
    "share": 0.40667,
}
TABLE = "| prior | log P(X) |\n|---|---|\n| standard | -104.79 |\n"


@pytest.fixture
def repo(tmp_path) -> Path:
    folder = tmp_path / "docs" / "results" / "priors"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(RESULTS))
    (folder / "results.md").write_text(
        "Some text.\n\n" + TABLE + "\nMore.\n\n| a |\n|---|\n| 1 |\n"
    )
    (tmp_path / "docs" / "results" / "other").mkdir()
    (tmp_path / "docs" / "results" / "other" / "results.json").write_text("{}")
    (tmp_path / "README.md").write_text("No markers here: 1.5 and 2.\n")
    return tmp_path


def page(repo: Path, text: str) -> Path:
    file = repo / "docs" / "page.md"
    file.write_text(text)
    return file


def test_numbers_written_as_their_results_give_them_are_not_stale(repo):
    text = (
        "N(0, I) scores -104.79<!-- result priors: pick(rows, name='standard').log_px.mean -->"
        " ± 0.07<!-- result priors: rows[0].log_px.stderr -->, the VampPrior gains "
        "+3.74<!-- result priors: rows[1].log_px.mean - rows[0].log_px.mean --> nats; "
        "12,345<!-- result priors: count --> images, 40.67%<!-- result priors: 100 * share -->,"
        " 0.4<!-- result docs/results/priors/results.json: r['share'] -->, "
        "12,345.4<!-- result other: results('priors').count + 0.4 -->.\n"
    )
    assert refresh(page(repo, text), repo) == []


def test_a_stale_number_is_named_and_rewritten_as_it_was_written(repo):
    file = page(
        repo,
        "a\n-104.80<!-- result priors: rows[0].log_px.mean --> and "
        "+3.7<!-- result priors: rows[1].log_px.mean - rows[0].log_px.mean -->, "
        "12,000<!-- result priors: count --> and 41%<!-- result priors: 100 * share -->\n",
    )
    stale = refresh(file, repo)
    assert [(s.where, s.written, s.results) for s in stale] == [
        ("docs/page.md:2", "-104.80", "-104.79"),
        ("docs/page.md:2", "12,000", "12,345"),
    ]
    assert file.read_text().startswith("a\n-104.80")  # checking writes nothing
    assert [s.results for s in refresh(file, repo, write=True)] == ["-104.79", "12,345"]
    assert file.read_text() == (
        "a\n-104.79<!-- result priors: rows[0].log_px.mean --> and "
        "+3.7<!-- result priors: rows[1].log_px.mean - rows[0].log_px.mean -->, "
        "12,345<!-- result priors: count --> and 41%<!-- result priors: 100 * share -->\n"
    )
    assert refresh(file, repo) == []


def test_markers_in_fenced_code_are_examples_left_alone(repo):
    example = (
        "```markdown\n1.0<!-- result nothing: x -->\n"
        "<!-- results-table nothing 1 -->\n|a|\n<!-- /results-table -->\n```\n"
    )
    assert (
        refresh(page(repo, example + "12,000<!-- result priors: count -->\n"), repo)[0].written
        == "12,000"
    )


def test_a_table_between_its_markers_is_that_of_the_results_page(repo):
    good = f"Intro.\n\n<!-- results-table priors 1 -->\n{TABLE}<!-- /results-table -->\n"
    assert refresh(page(repo, good), repo) == []
    file = page(repo, good.replace("-104.79", "-104.80"))
    assert [s.results for s in refresh(file, repo)] == ["table 1 of priors"]
    refresh(file, repo, write=True)
    assert file.read_text() == good
    second = "<!-- results-table priors 2 -->\n| a |\n|---|\n| 2 |\n<!-- /results-table -->\n"
    assert len(refresh(page(repo, second), repo)) == 1


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("1.0<!-- result nothing: x -->", "page.md:1: cannot read"),
        ("1.0<!-- result priors: rows[5].log_px -->", "`rows[5].log_px` fails on priors"),
        ("1.0<!-- result priors: rows[0].nothing -->", "no key 'nothing'"),
        ("1.0<!-- result priors: rows[0].log_px -->", "gives {'mean'"),
        ("1.0<!-- result priors: pick(rows, name='x') -->", "no row with {'name': 'x'}"),
        ("1.0<!-- result priors: __import__('os') -->", "fails on priors"),
        ("<!-- results-table priors 3 -->\n|a|\n<!-- /results-table -->", "has 2 tables"),
    ],
)
def test_a_marker_that_names_nothing_is_an_error_with_its_line(repo, marker, message):
    with pytest.raises(UsageError, match=r"docs/page\.md:1: ") as err:
        refresh(page(repo, marker), repo)
    assert message in str(err.value)


def test_the_repository_pages_are_readme_and_every_docs_page():
    root = Path(__file__).resolve().parents[1]
    found = pages(root)
    assert found[0] == root / "README.md"
    assert root / "docs" / "priors.md" in found and root / "docs" / "index.md" in found


def test_every_marked_number_of_the_repository_equals_its_results(capsys):
    # the README and every docs page: a rerun that changes a result, or an edit of the
    # prose, fails here until `python -m pyro_vae.cli.published --write` (or
    # `pyro-vae reproduce`) writes the results' numbers again
    assert main([]) == 0, capsys.readouterr().out
