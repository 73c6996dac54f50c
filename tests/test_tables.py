"""The Markdown-table helper: exact output, escaping, and rows of the wrong length."""

import pytest

from pyro_vae.tables import escape_cell, markdown_table


def test_table_is_header_separator_and_rows():
    got = markdown_table(["model", "log P(X)", "units"], [["VAE", "-98.12", 20], ["AE", 1.5, 0]])
    assert got == (
        "| model | log P(X) | units |\n|---|---|---|\n| VAE | -98.12 | 20 |\n| AE | 1.5 | 0 |\n"
    )
    assert markdown_table(["only"], []) == "| only |\n|---|\n"
    # rows may be any sequences, e.g. tuples from a generator's output
    assert markdown_table(("a", "b"), (("x", ""),)) == "| a | b |\n|---|---|\n| x |  |\n"


def test_pipes_in_cells_and_header_are_escaped():
    got = markdown_table(["P(X|z)"], [["||mu||^2/2"]])
    assert got == "| P(X\\|z) |\n|---|\n| \\|\\|mu\\|\\|^2/2 |\n"
    assert escape_cell("D[p || q]") == "D[p \\|\\| q]"
    assert escape_cell("already \\| escaped") == "already \\| escaped"  # not escaped twice
    assert escape_cell(escape_cell("a|b")) == "a\\|b"
    assert escape_cell("two\nlines") == "two lines"  # a line break would end the row
    assert escape_cell(0.25) == "0.25"


def test_a_row_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match=r"rows\[1\] has 3 cells but the header has 2"):
        markdown_table(["a", "b"], [["1", "2"], ["1", "2", "3"]])
    with pytest.raises(ValueError, match=r"rows\[0\] has 1 cells.*\['lonely'\]"):
        markdown_table(["a", "b"], [["lonely"]])
    with pytest.raises(ValueError, match="at least one column"):
        markdown_table([], [])
