"""What the reader tests share: a read that collects the objects the reader drops."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from babelrs_core.config import Importers
from babelrs_core.data.formats import Dropped, FormatReader, ignore_drop
from babelrs_core.data.manifest import ManifestRow


def read_all(
    reader: FormatReader,
    root: Path,
    params: Importers,
    splits: Sequence[str] | None = None,
    drops: list[Dropped] | None = None,
) -> list[ManifestRow]:
    """Every row ``reader`` yields from ``root``; dropped objects go to ``drops`` when given."""
    return list(reader(root, params, splits, drops.append if drops is not None else ignore_drop))
