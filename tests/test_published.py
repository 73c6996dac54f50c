"""Numbers and tables marked in Markdown are checked against, and rewritten from, the
results files they name (pyro_vae.cli.published)."""

import json
import re
from pathlib import Path

import pytest

from pyro_vae.cli import published
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


def test_a_path_source_gives_numbers_from_its_json_and_tables_from_its_md_twin(repo):
    # the benchmarks' results: benchmarks/results/NAME.json and NAME.md
    folder = repo / "benchmarks" / "results"
    folder.mkdir(parents=True)
    (folder / "speed.json").write_text(json.dumps({"ms": {"fast": 5.951, "torch": 4.941}}))
    (folder / "speed.md").write_text("# speed\n\nCaption.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    source = "benchmarks/results/speed.json"
    good = (
        f"1.20<!-- result {source}: ms.fast / ms.torch -->x\n\n"
        f"<!-- results-table {source} 1 -->\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "<!-- /results-table -->\n"
    )
    assert refresh(page(repo, good), repo) == []
    file = page(repo, good.replace("| 1 | 2 |", "| 1 | 3 |").replace("1.20", "1.10"))
    assert [s.results for s in refresh(file, repo, write=True)] == ["1.20", f"table 1 of {source}"]
    assert file.read_text() == good


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


#: decimal numbers of the pages that no run produced, so they carry no marker: settings,
#: thresholds, closed-form constants, section numbers, versions and numbers quoted from
#: papers. A new decimal number on a page must either be marked or named here.
NOT_RESULTS = {
    "README.md": {"1606.05908", "3.10", "3.11", "0.7", "0.1"},
    "docs/index.md": {"1606.05908", "3.10"},
    "docs/autoencoder_limit.md": {"0.01", "0.1", "4.5", "82.1"},  # sqrt(20); a closed form
    "docs/cvae.md": {"2.3"},  # log 10
    "docs/estimators.md": {"0.1", "0.7", "0.05"},
    "docs/distributed.md": {"1.8", "1.4", "0.75"},  # the targets; the test's tolerance
    "docs/evaluation.md": {"2.3", "0.5", "0.7", "0.65"},
    "docs/guide.md": {"2.4", "0.01", "0.1", "0.25", "-86.76", "-85.33", "-84.78", "-82.90"}
    | {"9.8"},  # Burda et al.'s table and budget
    "docs/guide_families.md": {"0.01", "-85.33", "-86.76", "9.8"},
    "docs/latent_dim.md": {"0.01", "0.1"},
    "docs/likelihoods.md": {"2.1", "0.1"},
    "docs/manifold_2d.md": {"0.025", "0.975", "2.5", "1.96"},
    "docs/naive_vs_importance.md": {"2.3"},
    # Doersch's figure 3, and one example digit of this repository's figure
    "docs/performance.md": {"1.10", "1.05", "1.25", "1.2"},  # the targets
    "docs/pixel_distance.md": {"0.0387", "0.2693", "15.2", "21.2"},
    "docs/prior_samples.md": {"2.3"},
    "docs/priors.md": {"2.1", "-85.57"},  # a section; the VampPrior paper
    "docs/ring.md": {"0.1", "0.02", "1.1253", "0.066", "0.9"},
    # Pyro's example and Kingma et al.'s table
    "docs/semi_supervised.md": {"0.7712", "0.8716", "0.8863", "0.9319", "0.9437", "0.9487"}
    | {"11.97%", "1.71"},
    "docs/sigma_sweep.md": {"2.4", "0.01", "0.03", "0.1", "0.2", "0.5", "1.0"},
    # beta; -784 log sqrt(2 pi)
    "docs/vqvae.md": {"0.25", "-720.4", "720.4"},
}
#: whole numbers with a unit ("53 nats", "23 s", "74%") that no run produced: targets,
#: thresholds, closed forms. Integers without a unit are mostly settings and counts.
NOT_RESULTS_WHOLE = {
    "README.md": {"2 minutes"},  # pip's download of PyTorch, not a run of this project
    "docs/evaluation.md": {"10%"},  # the k-hat warning's threshold
    "docs/naive_vs_importance.md": {"1 nat"},  # the study's within_nats setting
    "docs/performance.md": {"50%", "60%", "60 minutes"},  # the targets
    "docs/vqvae.md": {"20 nats"},  # a squared error of 40, halved
}
UNMARKED_PAGES = {"docs/results.md"}  # written whole by pyro-vae reproduce
DECIMAL = re.compile(r"(?<![\w.])[-+]?\d[\d,]*\.\d+%?")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
WHOLE = re.compile(
    r"(?<![\w.^/-])[-+−]?\d[\d,]*(?:%|x\b| (?:nats?|ms|MB|GB|minutes?|seconds|s|hours?)\b)"
    r"(?!\.\d)"
)


def _prose(text: str) -> str:
    """A page without code, results tables, marked numbers, comments and link targets."""
    for pattern in (published.TABLE, published.MARKER, CODE, re.compile(r"<!--.*?-->", re.DOTALL)):
        text = pattern.sub("", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def unmarked_decimals(text: str) -> set[str]:
    """The decimal numbers of a page, outside code, tables between results-table markers,
    link targets and comments, that carry no result marker."""
    return set(DECIMAL.findall(_prose(text)))


def unmarked_measures(text: str) -> set[str]:
    """The whole numbers with a unit (nats, ms, MB, minutes, s, %, x) of a page, outside
    what :func:`unmarked_decimals` leaves out, that carry no result marker."""
    return set(WHOLE.findall(_prose(text)))


def test_unmarked_decimals_are_found_outside_code_and_markers():
    text = (
        "a 1.5 and 2.25<!-- result x: y --> `3.5` ```\n4.5\n``` [7.5](a/8.5.md) 9.5% 1,234.5\n"
        "<!-- results-table x 1 -->\n| 6.5 |\n<!-- /results-table -->\n"
    )
    assert unmarked_decimals(text) == {"1.5", "7.5", "9.5%", "1,234.5"}


def test_unmarked_whole_numbers_with_a_unit_are_found():
    text = (
        "about 53 nats, 23 s and 74%, 8x, 1,090 ms; 4.5 nats and 2.5x are decimals; "
        "12<!-- result x: y --> nats; the 0s and 1s, 2 x 3, 10^4 s, 784 pixels, `9 nats`\n"
    )
    assert unmarked_measures(text) == {"53 nats", "23 s", "74%", "8x", "1,090 ms"}


def test_every_decimal_number_a_run_produced_is_marked():
    # a heuristic for the numbers of results: decimals, and whole numbers with a unit
    # (other integers are mostly settings and counts)
    root = Path(__file__).resolve().parents[1]
    unexplained = {}
    for page in pages(root):
        name = str(page.relative_to(root))
        if name in UNMARKED_PAGES or name.startswith("docs/results/"):
            continue
        allowed = NOT_RESULTS.get(name, set()) | NOT_RESULTS_WHOLE.get(name, set())
        text = page.read_text()
        found = (unmarked_decimals(text) | unmarked_measures(text)) - allowed
        if found:
            unexplained[name] = sorted(found)
    assert not unexplained, (
        f"mark these with their results, or name them in NOT_RESULTS(_WHOLE): {unexplained}"
    )
