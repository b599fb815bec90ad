"""The format check over raw dataset folders (``babelrs data validate --raw``): the real format
readers run file by file and every malformed annotation file is reported with
``file:line: problem``; the rows of the good files are then validated like a manifest."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from babelrs_core.config import Importers
from babelrs_core.data.formats import FormatError, get_reader
from babelrs_core.data.manifest import ManifestRow, to_frame
from babelrs_core.data.validation.report import Failure, short

#: The pseudo check under which malformed annotation files are reported.
FORMAT_CHECK = "annotation_format"


def read_raw(
    roots: Mapping[str, str | os.PathLike[str]], importers: Importers
) -> tuple[pd.DataFrame, list[FormatError]]:
    """Run the format readers over raw dataset folders, file by file where the format has one
    label file per image (DOTA, DroneVehicle) and split by split for SARDet's COCO JSON.

    Returns the rows of every file that parsed (absolute image paths) and every problem found;
    a broken file costs only its own rows.
    """
    rows: list[ManifestRow] = []
    problems: list[FormatError] = []

    def take(chunk: Iterable[ManifestRow]) -> None:
        try:
            rows.extend(list(chunk))  # all rows of one file, or none
        except FormatError as exc:
            problems.append(exc)

    for name, folder in roots.items():
        root = Path(folder).resolve()
        try:
            units = list(_units(name, root, importers))
        except FormatError as exc:
            problems.append(exc)
            continue
        for unit in units:
            take(unit)
    frame = to_frame(rows)
    return frame, problems


def _units(name: str, root: Path, importers: Importers) -> Iterable[Iterable[ManifestRow]]:
    """Lazy per-file (or per-split) row streams of one dataset folder; a unit whose folders are
    broken becomes one stream that raises its error."""
    reader = get_reader(name)
    release = reader.open(root, importers)
    for unit in reader.units(release, None):
        try:
            files = list(reader.files(release, unit))
        except FormatError as exc:
            yield _raiser(exc)
            continue
        yield from files


def _raiser(exc: FormatError) -> Iterable[ManifestRow]:
    raise exc
    yield  # pragma: no cover


def format_failure(errors: Sequence[FormatError], limit: int) -> Failure:
    """The malformed annotation files, as one failing check."""
    return Failure(
        check=FORMAT_CHECK,
        table="raw",
        expectation="format readers (babelrs_core.data.formats)",
        description="annotation files follow their dataset's release format",
        count=len(errors),
        examples=[short(str(e)) for e in errors[:limit]],
    )
