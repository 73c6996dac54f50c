"""The numbers a docs page and the README quote from a study are those of the study's
committed results (``docs/results/NAME/``, written by ``experiments/NAME.py``): a rerun
that changes them, or an edit of the prose, fails here until both agree again."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from common import mean_se  # noqa: E402


def _published(name: str) -> tuple[dict, str]:
    folder = ROOT / "docs" / "results" / name
    return json.loads((folder / "results.json").read_text()), (folder / "results.md").read_text()


def _prose(file: Path) -> str:
    """The text of a page with its comments (the result markers) removed and its
    whitespace collapsed, as a reader sees it."""
    return " ".join(re.sub(r"<!--.*?-->", "", file.read_text()).split())


def _table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def priors():
    results, markdown = _published("priors")
    return {row["name"]: row for row in results["rows"]}, markdown


def test_the_priors_page_shows_the_tables_of_its_results(priors):
    _, markdown = priors
    page = (ROOT / "docs" / "priors.md").read_text().splitlines()
    missing = [line for line in _table_lines(markdown) if line not in page]
    assert not missing, missing


def test_the_priors_page_and_the_readme_quote_its_results(priors):
    rows, _ = priors
    page = _prose(ROOT / "docs" / "priors.md")
    readme = _prose(ROOT / "README.md")
    learned = [r for name, r in rows.items() if name != "standard"]

    def gain(name: str) -> str:
        return mean_se(rows[name]["log_px_vs_reference"], sign="+")

    gains = [r["log_px_vs_reference"]["mean"] for r in learned]
    kl = [r["kl_term"] for r in learned]
    reconstruction = [r["reconstruction"] for r in learned]
    gaps = [r["gap"]["mean"] for r in rows.values()]
    seeds = [r["log_px"]["seed_means"] for r in rows.values()]
    spread = max(max(means) - min(means) for means in seeds)
    data_init = rows["vamp-data"]["log_px"]["mean"] - rows["vamp"]["log_px"]["mean"]
    quoted = [
        f"mixture {gain('mixture')} nats",
        f"VampPrior {gain('vamp')}",
        f"VampPrior with data init {gain('vamp-data')}",
        f"flow {gain('flow')}",
        f"within {spread:.1f} nats of each other",
        f"stays at {min(gaps):.1f} to {max(gaps):.1f} nats",
        f"falls from {rows['standard']['kl_term']:.1f} nats to {min(kl):.1f} to {max(kl):.1f}",
        f"({max(reconstruction):.1f} to {min(reconstruction):.1f} against "
        f"{rows['standard']['reconstruction']:.2f})",
        f"uses {rows['mixture']['components_in_use']:.1f} of its 10 Gaussians",
        f"({rows['vamp']['components_in_use']:.1f} and "
        f"{rows['vamp-data']['components_in_use']:.1f})",
        f"advantage of {data_init:.2f} nats",
        f"gains {min(gains):.1f} to {max(gains):.1f} nats of log P(X)",
        f"{rows['vamp']['prior_parameters']:,} more parameters",
    ]
    missing = [claim for claim in quoted if claim not in page]
    assert not missing, missing
    assert f"gains {rows['vamp-data']['log_px_vs_reference']['mean']:.1f} nats" in readme


@pytest.fixture(scope="module")
def semi_supervised():
    results, markdown = _published("semi_supervised")
    return results, markdown


def test_the_semi_supervised_page_shows_the_tables_of_its_results(semi_supervised):
    _, markdown = semi_supervised
    page = (ROOT / "docs" / "semi_supervised.md").read_text().splitlines()
    missing = [line for line in _table_lines(markdown) if line not in page]
    assert not missing, missing


def test_the_semi_supervised_page_and_the_readme_quote_its_results(semi_supervised):
    results, _ = semi_supervised
    page = _prose(ROOT / "docs" / "semi_supervised.md")
    readme = _prose(ROOT / "README.md")
    rows = {r["labels"]: r for r in results["rows"]}

    def error(labels: int, key: str) -> str:
        return f"{100 * rows[labels][key]['mean']:.2f}%"

    def accuracy(labels: int) -> str:
        return f"{1 - rows[labels]['classifier_error']['mean']:.4f}"

    alpha, longer = results["probes"]
    quoted = [
        f"M2 errs on {error(100, 'm2_error')} of the test images, against "
        f"{error(100, 'classifier_error')} for the same network",
        f"({error(600, 'm2_error')} against {error(600, 'classifier_error')}, "
        f"{error(1000, 'm2_error')} against {error(1000, 'classifier_error')})",
        f"has {accuracy(100)}, {accuracy(600)} and {accuracy(1000)}",
        f"with alpha {alpha['alpha']:g} M2 errs on {100 * alpha['m2_error']:.2f}% (the "
        f"classifier alone {100 * alpha['classifier_error']:.2f}%)",
        f"trained {longer['epochs']} epochs on {100 * longer['m2_error']:.2f}% (the "
        f"classifier alone, as long, {100 * longer['classifier_error']:.2f}%)",
    ]
    missing = [claim for claim in quoted if claim not in page]
    assert not missing, missing
    assert (
        f"errs on {error(100, 'm2_error')} of the test images against "
        f"{error(100, 'classifier_error')}" in readme
    )
