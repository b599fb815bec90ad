"""Markdown tables: the one writer of every table the reports, the docs sections and the
benchmarks print."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table_row(cells: Iterable[object]) -> str:
    """One table line, ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_head(head: Sequence[str], align: str = "l") -> list[str]:
    """A table's header line and separator. ``align`` has a letter a column, ``l`` (left) or
    ``r`` (right); its last letter stands for every column after it (``"lr"``: the first column
    left, the others right)."""
    if not align or set(align) - {"l", "r"}:
        raise ValueError(f"align must be letters l or r, got {align!r}")
    letters = align + align[-1] * max(0, len(head) - len(align))
    separator = "|".join("---:" if a == "r" else "---" for a in letters[: len(head)])
    return [table_row(head), f"|{separator}|"]
