"""The results page of ``pyro-vae reproduce``: every experiment's table and figures in
one Markdown page, and its publication into ``docs/results.md`` and ``docs/results/``."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from pyro_vae.errors import UsageError
from pyro_vae.io import write_text


class Experiment(NamedTuple):
    """One experiment script: its name, what it shows, and its doc page."""

    name: str
    title: str
    page: str
    minutes: float  # measured wall time of the full run on a 2-core CPU


def read_results(folder: Path) -> dict:
    """The ``results.json`` of an experiment's folder.

    :raises UsageError: naming the file, if it is not JSON or not an object.
    """
    file = folder / "results.json"
    fix = f"rerun the experiment (`pyro-vae reproduce --only {folder.name}`)"
    try:
        results = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{file} is not JSON ({err}); {fix}") from None
    if not isinstance(results, dict):
        raise UsageError(f"{file} holds a {type(results).__name__}, not an object; {fix}")
    return results


def results_page(
    experiments,
    out: Path,
    seconds: dict[str, float],
    quick: bool,
    failed: list[str] = (),
    docs: Path | None = None,
    figures: str | None = None,
    written: str | None = None,
) -> str:
    """Every experiment's table and figures, in one Markdown page.

    :param failed: experiments that failed in this run; the page names them.
    :param docs: where the discussion pages are; links are made relative to ``out``
        (default: the pages sit next to the results page).
    :param figures: folder that image links point into (relative to the page);
        default: each experiment's own folder next to the page.
    :param written: the date the page gives (default: today, in UTC).
    """
    command = "pyro-vae reproduce --quick" if quick else "pyro-vae reproduce"
    caveat = " (tiny budgets: these numbers check the code, not the claims)" if quick else ""
    pages = "" if docs is None else os.path.relpath(docs, out.resolve()) + "/"
    lines = [
        "# Results of every experiment\n\n",
        f"Written by `{command}`{caveat} on {written or _today()}, with {_versions()}. "
        "Each section names its script, its wall time on the machine that ran it, and its "
        "page in these docs, which explains the numbers.\n",
    ]
    if failed:
        lines.append(f"\n**Failed in this run, so missing below:** {', '.join(failed)}.\n")
    for e in experiments:
        folder = out / e.name
        link = f"{figures}/{e.name}" if figures is not None else e.name
        lines += [
            f"\n## {e.title}\n\n",
            f"`python experiments/{e.name}.py{' --quick' if quick else ''}`: "
            f"{_wall_minutes(folder, seconds, e)}. Discussion: [{e.page}]({pages}{e.page}).\n",
            (folder / "results.md").read_text(),
        ]
        lines += [f"![{e.name}: {png.stem}]({link}/{png.name})\n\n" for png in figures_of(folder)]
    return "".join(lines)


def publish(out: Path, docs: Path, experiments, seconds: dict[str, float]) -> None:
    """Copy the results page, and each experiment's results and figures, into
    ``docs/results.md`` and ``docs/results/NAME/``, replacing an earlier run's: the
    pages' numbers are tested against these ``results.json`` files."""
    target = docs / "results"
    for e in experiments:
        folder = target / e.name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for file in (
            out / e.name / "results.json",
            out / e.name / "results.md",
            *figures_of(out / e.name),
        ):
            shutil.copyfile(file, folder / file.name)
    page = results_page(experiments, out, seconds, quick=False, figures="results")
    write_text(docs / "results.md", page)
    walls = {e.name: _wall_seconds(out / e.name, seconds, e) for e in experiments}
    summary = {
        "written": _today(),
        "versions": _versions(),
        "wall_seconds": walls,  # each experiment's, as the page gives them
        "total_wall_seconds": None if None in walls.values() else sum(walls.values()),
    }
    write_text(target / "summary.json", json.dumps(summary, indent=2) + "\n")


def recorded_budget(folder: Path) -> dict:
    """The budget an experiment's ``results.json`` records, with ``is_quick`` and
    ``overrides`` filled in for results written before budgets recorded them."""
    budget = read_results(folder).get("budget")
    epochs = budget.get("epochs", 0) if isinstance(budget, dict) else None
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)):
        return {"is_quick": True}  # nothing says how it was made: never publish it
    return {"is_quick": epochs <= 1, "overrides": [], **budget}


def _wall_seconds(folder: Path, measured: dict[str, float], e: Experiment) -> float | None:
    """What the experiment took: as measured in this run, else as its results record."""
    if e.name in measured:
        return measured[e.name]
    seconds = read_results(folder).get("wall_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return float(seconds)


def _wall_minutes(folder: Path, measured: dict[str, float], e: Experiment) -> str:
    seconds = _wall_seconds(folder, measured, e)
    if seconds is None:
        return f"about {e.minutes:g} minutes (expected; this run did not record it)"
    return f"{seconds / 60:.1f} minutes"


def figures_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def _versions() -> str:
    import platform

    import pyro
    import torch

    from pyro_vae.version import __version__

    return (
        f"pyro_vae {__version__}, Pyro {pyro.__version__}, PyTorch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )
