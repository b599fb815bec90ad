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
    """Lazy per-file (or per-split) row streams of one dataset folder."""
    from babelrs_core.data.formats import dota, dronevehicle, sardet
    from babelrs_core.data.formats._common import pair_by_stem

    if not root.is_dir():
        raise FormatError(root, None, f"{name} dataset folder not found")
    if name == "dota":
        splits = dota.discover_splits(root)
        if not splits:
            raise FormatError(root, None, "no {train,val,test}/images/ with a label folder")
        for split in splits:
            d = root / split
            try:
                labels = dota.label_dir(d)
                if labels is None:  # gone since discover_splits saw it: as dota.read says
                    looked = " or ".join(dota.LABEL_DIRS)
                    raise FormatError(d, None, f"split {split!r}: no {looked} folder")
                pairs = pair_by_stem(d / dota.IMAGES, labels, dota.LABEL_SUFFIX)
            except FormatError as exc:
                yield _raiser(exc)
                continue
            for stem, image, label in pairs:
                yield dota.read_file(root, split, stem, image, label, importers)
    elif name == "dronevehicle":
        modalities = list(dict.fromkeys(importers.dronevehicle_modalities))
        pairs_found = dronevehicle.discover_splits(root, modalities)
        if not pairs_found:
            raise FormatError(root, None, "no DroneVehicle split folders found")
        for split, modality in pairs_found:
            img_dir, label_dir = dronevehicle.folders(root, split, modality)
            try:
                pairs = pair_by_stem(img_dir, label_dir, dronevehicle.LABEL_SUFFIX)
            except FormatError as exc:
                yield _raiser(exc)
                continue
            for stem, image, label in pairs:
                yield dronevehicle.read_file(root, split, modality, stem, image, label, importers)
    elif name == "sardet":
        splits = sardet.discover_splits(root)
        if not splits:
            raise FormatError(root, None, "no Annotations/{train,val,test}.json found")
        for split in splits:
            path = sardet.annotation_file(root, split)
            if path is None:  # gone since discover_splits saw it: as sardet.read says
                looked = ", ".join(p.name for p in sardet.annotation_candidates(root, split))
                problem = f"split {split!r}: none of {looked}"
                yield _raiser(FormatError(root / sardet.ANNOTATIONS, None, problem))
                continue
            yield sardet.read_split(root, split, path, importers)
    else:  # a reader added later: one unit for the whole folder
        yield get_reader(name)(root, importers)


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
