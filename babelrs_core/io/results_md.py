"""The one writer of ``docs/results.md``: each generated section (detector fine-tuning,
pretraining, ablation, benchmarks) replaces its own ``## `` heading and leaves the others alone."""

from __future__ import annotations

import os
from pathlib import Path

from babelrs_core.io.atomic import write_text


def update_results_md(
    path: str | os.PathLike[str], section: str, heading: str, title: str = "# Results"
) -> Path:
    """Replace (or append) the ``heading`` section of ``path``; other sections stay untouched
    (a missing file starts with ``title``)."""
    path = Path(path)
    text = path.read_text() if path.exists() else title + "\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    new = section.rstrip("\n").splitlines()
    if start is None:
        body = text.rstrip("\n") + "\n\n" + "\n".join(new) + "\n"
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        merged = lines[:start] + new + ([""] if end < len(lines) else []) + lines[end:]
        body = "\n".join(merged).rstrip("\n") + "\n"
    write_text(path, body)
    return path
