"""Import datasets in their release formats into the manifest (one Parquet file).

:func:`import_datasets` runs the format readers (:mod:`babelrs_core.data.formats`) over each
dataset folder, checks that every image id is unique across all of them, and writes the manifest
atomically: if any file fails to parse, nothing is written and an existing manifest is left as
it was. The returned :class:`ImportReport` counts rows, images and objects per dataset / modality
/ split, and lists every object that was dropped on purpose (DroneVehicle's ``*``, degenerate or
out-of-image boxes) with its reason.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from babelrs_core.config import Params
from babelrs_core.data.formats import FormatError, get_reader
from babelrs_core.data.formats.errors import UNLABELLED_SPLIT, Dropped
from babelrs_core.data.layout import dataset_roots
from babelrs_core.data.manifest import ManifestRow, write_manifest


@dataclass
class SplitCounts:
    """What one dataset / modality / split contributed to the manifest."""

    rows: int = 0
    images: int = 0
    objects: int = 0


@dataclass
class ImportReport:
    """Outcome of an import: counts per ``(dataset, modality, split)`` and the dropped objects."""

    manifest_path: Path
    counts: dict[tuple[str, str, str], SplitCounts] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.counts.values())

    @property
    def images(self) -> int:
        return sum(c.images for c in self.counts.values())

    @property
    def objects(self) -> int:
        return sum(c.objects for c in self.counts.values())

    @property
    def dropped_objects(self) -> list[Dropped]:
        """Dropped objects only (skipped unlabelled splits are left out)."""
        return [d for d in self.dropped if d.reason != UNLABELLED_SPLIT]

    @property
    def skipped_splits(self) -> list[Dropped]:
        """Splits that have images but no label folder (e.g. DOTA's test set)."""
        return [d for d in self.dropped if d.reason == UNLABELLED_SPLIT]

    def dropped_by_reason(self) -> dict[tuple[str, str], int]:
        """Number of dropped objects per ``(dataset, reason)``."""
        return dict(Counter((d.dataset, d.reason) for d in self.dropped_objects))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for metrics files and the CLI)."""
        return {
            "manifest": str(self.manifest_path),
            "rows": self.rows,
            "images": self.images,
            "objects": self.objects,
            "splits": [
                {"dataset": d, "modality": m, "split": s, **vars(c)}
                for (d, m, s), c in sorted(self.counts.items())
            ],
            "dropped": [
                {"dataset": d, "reason": r, "count": n}
                for (d, r), n in sorted(self.dropped_by_reason().items())
            ],
            "skipped_splits": [str(d) for d in self.skipped_splits],
        }

    def summary(self) -> str:
        """A small plain-text table for the terminal."""
        lines = [f"{'dataset':<13}{'modality':<9}{'split':<7}{'images':>8}{'objects':>9}"]
        for (d, m, s), c in sorted(self.counts.items()):
            lines.append(f"{d:<13}{m:<9}{s:<7}{c.images:>8}{c.objects:>9}")
        lines.append(f"{'total':<29}{self.images:>8}{self.objects:>9}")
        for (d, r), n in sorted(self.dropped_by_reason().items()):
            lines.append(f"dropped {n} {d} object(s): {r}")
        for skip in self.skipped_splits:
            lines.append(f"skipped {skip.dataset} {skip.split} ({skip.file}): {skip.reason}")
        lines.append(f"manifest: {self.manifest_path}")
        return "\n".join(lines)


def _collect(
    name: str, rows: Iterable[ManifestRow], report: ImportReport, seen: dict[str, str]
) -> list[ManifestRow]:
    """Rows of one reader, counted; an image id already used by another image is an error.

    Readers yield the rows of one image consecutively, so an id that reappears after another
    image started belongs to a second image.
    """
    out: list[ManifestRow] = []
    current: str | None = None
    for row in rows:
        if row.dataset != name:
            raise ValueError(f"reader for {name!r} produced a {row.dataset!r} row")
        if row.image_id != current:
            if row.image_id in seen:
                raise FormatError(
                    row.path,
                    None,
                    f"image id {row.image_id!r} is also used by {seen[row.image_id]}",
                )
            seen[row.image_id] = row.path
            current = row.image_id
            counts = report.counts.setdefault((row.dataset, row.modality, row.split), SplitCounts())
            counts.images += 1
        counts.rows += 1
        if row.object_index >= 0:
            counts.objects += 1
        out.append(row)
    return out


def import_datasets(
    roots: Mapping[str, str | os.PathLike[str]],
    manifest_path: str | os.PathLike[str],
    params: Params,
    progress: bool = True,
) -> ImportReport:
    """Read every dataset of ``roots`` (dataset name -> folder) and write one manifest.

    Raises :class:`FormatError` for the first broken file (nothing is written then),
    ``FileNotFoundError`` for a missing dataset folder and ``KeyError`` for an unknown dataset name.
    """
    manifest_path = Path(manifest_path)
    report = ImportReport(manifest_path)
    readers = {name: get_reader(name) for name in roots}
    for name, root in roots.items():
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root}: {name} dataset folder not found")
    rows: list[ManifestRow] = []
    seen: dict[str, str] = {}
    for name, root in roots.items():
        stream = readers[name](Path(root), params.importers, None, report.dropped.append)
        bar = tqdm(stream, desc=f"import {name}", unit=" rows", disable=not progress, leave=False)
        rows.extend(_collect(name, bar, report, seen))
    if not rows:
        raise ValueError(f"no images found in {', '.join(str(r) for r in roots.values())}")
    write_manifest(rows, manifest_path)
    return report


def import_soi_mini(params: Params, progress: bool = True) -> ImportReport:
    """Import SOI-mini (``params.paths.raw``) into ``params.paths.manifest``."""
    return import_datasets(dataset_roots(params.paths.raw), params.paths.manifest, params, progress)
