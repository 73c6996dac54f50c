"""Numbers and tables in the README and the docs that come from a results file.

A number that a run produced is written in the Markdown followed by a comment that says
where it comes from; a table, between two comments that name the results page it is
copied from. Neither comment shows on GitHub or on the docs site::

    the gap is 6.12<!-- result default_run: evaluation.gap.mean --> nats
    errs on 40.67%<!-- result semi_supervised: 100 * pick(rows, labels=100).m2_error.mean -->

    <!-- results-table priors 1 -->
    | prior | log P(X) | ... |
    <!-- /results-table -->

``NAME`` is an experiment (its ``docs/results/NAME/results.json``, written by
``pyro-vae reproduce``) or a path from the repository root to a JSON file. The
expression is Python over that file's top-level keys (also ``r``, the whole object);
objects read as attributes too (``row.log_px.mean``), and ``pick(rows, key=value)`` is
the first row whose keys have those values (``abs``, ``min``, ``max``, ``len``, ``sum``,
``zip``, ``sorted`` and ``float`` are there too); ``results("OTHER")`` reads another
experiment's results (a difference between two studies). The number is written as it was: the same
decimals, thousands separator and explicit plus sign. ``results-table NAME I`` is the
I-th table (from 1) of ``docs/results/NAME/results.md`` (of the ``.md`` file beside a
JSON path). Markers inside fenced code
blocks are examples and are left alone.

:func:`refresh` rewrites the numbers and tables of a file from the results (``pyro-vae
reproduce`` does it for every page after publishing), or lists those that differ;
``python -m pyro_vae.cli.published`` checks every page, ``--write`` rewrites them.

The benchmarks' results are paths: ``benchmarks/results/evaluate.json`` for numbers and
``benchmarks/results/evaluate.json`` (read as its ``.md`` twin) for tables, which
``python benchmarks/publish.py`` writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

from pyro_vae.errors import UsageError
from pyro_vae.io import write_text

NUMBER = r"(?P<number>[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?P<unit>[%x×]?)"
MARKER = re.compile(NUMBER + r"<!-- result (?P<source>[\w./-]+): (?P<expr>.+?) -->")
TABLE = re.compile(
    r"(?P<open><!-- results-table (?P<source>[\w./-]+) (?P<index>\d+) -->\n)"
    r"(?P<table>.*?)(?P<close><!-- /results-table -->)",
    re.DOTALL,
)

FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


class Stale(NamedTuple):
    """A number or table of a page that its results do not give."""

    where: str  # file:line
    written: str
    results: str


class Record(dict):
    """A JSON object whose keys read as attributes too."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no key {key!r} (keys: {', '.join(self)})") from None


def pick(rows: list, **where):
    """The first of ``rows`` whose keys have the values ``where`` gives."""
    for row in rows:
        if all(row.get(k) == v for k, v in where.items()):
            return row
    raise LookupError(f"no row with {where}")


def pages(root: Path) -> list[Path]:
    """``README.md`` and every Markdown page of ``docs/``."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def refresh(file: Path, root: Path, write: bool = False) -> list[Stale]:
    """The numbers and tables of ``file`` that differ from their results; with
    ``write``, rewrite them from the results.

    :raises UsageError: naming the file and line of a marker whose results are missing
        or whose expression fails.
    """
    text = file.read_text()
    stale: list[Stale] = []
    cache: dict[str, object] = {}

    def where(pos: int) -> str:
        return f"{file.relative_to(root)}:{text.count(chr(10), 0, pos) + 1}"

    fenced = [m.span() for m in FENCED.finditer(text)]  # examples of the syntax: left alone

    def in_code(m: re.Match) -> bool:
        return any(start <= m.start() < end for start, end in fenced)

    def number(m: re.Match) -> str:
        if in_code(m):
            return m[0]
        value = _evaluate(m["source"], m["expr"], root, cache, where(m.start()))
        new = _formatted(value, m["number"], where(m.start()))
        if new != m["number"]:
            stale.append(Stale(where(m.start()), m["number"] + m["unit"], new + m["unit"]))
        return new + m["unit"] + m[0][len(m["number"]) + len(m["unit"]) :]

    def table(m: re.Match) -> str:
        if in_code(m):
            return m[0]
        new = _table(root, m["source"], int(m["index"]), where(m.start()))
        if new != m["table"]:
            stale.append(Stale(where(m.start()), "a table", f"table {m['index']} of {m['source']}"))
        return m["open"] + new + m["close"]

    new = TABLE.sub(table, MARKER.sub(number, text))
    if write and new != text:
        write_text(file, new)
    return stale


def _evaluate(source: str, expr: str, root: Path, cache: dict, where: str, whole=False):
    if source not in cache:
        path = _path(root, source, ".json")
        try:
            cache[source] = json.loads(path.read_text(), object_hook=Record)
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"{where}: cannot read {path} ({err})") from None
    results = cache[source]
    names = {**results, "r": results} if isinstance(results, dict) else {"r": results}
    helpers = {"pick": pick, "abs": abs, "min": min, "max": max, "len": len, "sum": sum}
    helpers |= {"zip": zip, "sorted": sorted, "float": float}
    helpers["results"] = lambda other: _evaluate(other, "r", root, cache, where, whole=True)
    try:
        value = eval(expr, {"__builtins__": {}, **helpers, **names})
    except Exception as err:  # an expression of the docs: name it and its error
        raise UsageError(f"{where}: `{expr}` fails on {source} ({err})") from None
    if whole:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: `{expr}` gives {value!r}, not a number")
    return value


def _formatted(value: float, written: str, where: str) -> str:
    """``value`` written as ``written`` is: decimals, separator, explicit sign."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    spec = ("+" if written.startswith("+") else "") + ("," if "," in written else "")
    text = f"{value:{spec}.{decimals}f}"
    if float(text.replace(",", "")) == 0:
        text = text.replace("-", "").replace("+", "+" if spec.startswith("+") else "")
    if written.startswith("−"):
        text = text.replace("-", "−")
    return text


def _path(root: Path, source: str, suffix: str) -> Path:
    """The results file of ``source``, a name or a path: ``.json`` for numbers and
    ``.md`` (the same stem) for tables."""
    path = root / source if "/" in source else root / "docs" / "results" / source
    if path.suffix in (".json", ".md"):
        return path.with_suffix(suffix)
    return path / f"results{suffix}"


def _table(root: Path, source: str, index: int, where: str) -> str:
    path = _path(root, source, ".md")
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise UsageError(f"{where}: cannot read {path} ({err})") from None
    tables: list[list[str]] = []
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if not (i and lines[i - 1].startswith("|")):
                tables.append([])
            tables[-1].append(line)
    if not 1 <= index <= len(tables):
        raise UsageError(f"{where}: {path} has {len(tables)} tables, not a table {index}")
    return "\n".join(tables[index - 1]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Check (or with ``--write`` rewrite) every page's numbers from their results."""
    parser = argparse.ArgumentParser(prog="python -m pyro_vae.cli.published")
    parser.add_argument("--write", action="store_true", help="rewrite stale numbers")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    try:
        stale = [s for page in pages(root) for s in refresh(page, root, write=args.write)]
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for s in stale:
        print(f"{s.where}: {s.written} -> {s.results}")
    verb = "rewrote" if args.write else "differ from their results"
    print(f"{len(stale)} number(s) or table(s) {verb}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
