"""Markdown tables: header, separator alignment, rows."""

from __future__ import annotations

import pytest

from babelrs_core.io.markdown import table_head, table_row


def test_the_last_alignment_letter_stands_for_the_remaining_columns() -> None:
    assert table_head(["a", "b", "c", "d"], "lr") == ["| a | b | c | d |", "|---|---:|---:|---:|"]
    assert table_head(["a", "b"]) == ["| a | b |", "|---|---|"]
    assert table_head(["a", "b", "c"], "rlr") == ["| a | b | c |", "|---:|---|---:|"]


def test_rows_format_every_cell() -> None:
    assert table_row(["x", 1, 2.5, None]) == "| x | 1 | 2.5 | None |"


def test_an_unknown_alignment_letter_is_an_error() -> None:
    with pytest.raises(ValueError, match="letters l or r"):
        table_head(["a"], "c")
