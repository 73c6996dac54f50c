"""Markdown tables for results pages: one helper instead of hand-made ``|---|`` lines.

Cells arrive already formatted (the caller decides digits and units); this module
only lays them out and escapes what would break the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: a ``|`` that is not already escaped as ``\|``
_BARE_PIPE = re.compile(r"(?<!\\)\|")


def escape_cell(text) -> str:
    """``text`` as the content of one Markdown table cell.

    A bare ``|`` would end the cell, so it becomes ``\\|`` (one already written as
    ``\\|`` is left alone, so escaping twice changes nothing); a line break would end
    the row, so it becomes a space. Numbers are written with ``str``.

    :param text: a string or a number.
    :returns: the escaped cell text.
    """
    return _BARE_PIPE.sub(r"\\|", str(text).replace("\r\n", " ").replace("\n", " "))


def markdown_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A Markdown table: the header row, a ``|---|`` separator line, then one line per row.

    :param header: the column names.
    :param rows: one sequence of cells per row, each cell a string or a number already
        formatted as it should appear; every row has as many cells as ``header``.
    :returns: the table's lines, each ending with a newline (no blank line around it).
    :raises ValueError: if ``header`` is empty or a row's length differs from it.
    """
    if len(header) == 0:
        raise ValueError("markdown_table needs at least one column")
    lines = [_line(header), "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"markdown_table: rows[{i}] has {len(row)} cells but the header has "
                f"{len(header)} ({', '.join(map(str, header))}): {list(row)!r}"
            )
        lines.append(_line(row))
    return "\n".join(lines) + "\n"


def _line(cells: Sequence) -> str:
    return "| " + " | ".join(escape_cell(cell) for cell in cells) + " |"
