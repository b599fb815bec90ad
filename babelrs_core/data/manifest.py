"""The manifest: one Parquet table that every stage after import reads.

One row per annotated object; an image without objects still gets one row whose object columns are
null (``object_index == -1``), so that images are never lost. Paths are stored relative to the
manifest file's folder, which keeps a data folder relocatable (and DVC-friendly).

Columns (see :data:`SCHEMA`):

==============  =========================================================================
image_id        ``{dataset}/{split}/{stem}``, unique per image
dataset         ``sardet`` | ``dota`` | ``dronevehicle``
modality        ``sar`` | ``rgb`` | ``ir``
split           ``train`` | ``val`` | ``test``
path            image file, relative to the manifest's folder (posix separators)
width, height   image size *after* any crop (what the model sees)
crop_x, crop_y  offset of that window inside the file (DroneVehicle's 100-px border), else 0
object_index    0.. per image, -1 for an image without objects
class_name      canonical class of the dataset (:mod:`babelrs_core.concepts`), null if none
raw_class       the string found in the annotation file
label           index in the 26-class SOI-Det union, -1 if none
x1 y1 x2 y2     horizontal box in cropped-image pixels
poly            oriented box as 8 floats (x1 y1 .. x4 y4, DOTA clockwise order), cropped pixels
difficult       DOTA / VOC difficult flag
source_file     annotation file the row came from (relative, for error messages)
source_line     1-based line (DOTA) or object ordinal (COCO, XML) in that file
sha256          of the image file's bytes when the manifest was written (null: not recorded);
                the validate stage and the training stages' pre-check compare the files with it
==============  =========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from babelrs_core.io.atomic import atomic_path
from babelrs_core.io.hashing import file_sha256

SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("dataset", pa.string()),
        ("modality", pa.string()),
        ("split", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("crop_x", pa.int32()),
        ("crop_y", pa.int32()),
        ("object_index", pa.int32()),
        ("class_name", pa.string()),
        ("raw_class", pa.string()),
        ("label", pa.int32()),
        ("x1", pa.float64()),
        ("y1", pa.float64()),
        ("x2", pa.float64()),
        ("y2", pa.float64()),
        ("poly", pa.list_(pa.float64())),
        ("difficult", pa.bool_()),
        ("source_file", pa.string()),
        ("source_line", pa.int32()),
        ("sha256", pa.string()),
    ]
)

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
#: The columns that describe the image (the same on every row of one ``image_id``).
IMAGE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "dataset",
    "modality",
    "split",
    "path",
    "width",
    "height",
    "crop_x",
    "crop_y",
)


@dataclass
class ManifestRow:
    """One manifest row; ``path`` is absolute (or cwd-relative) until written."""

    image_id: str
    dataset: str
    modality: str
    split: str
    path: str
    width: int
    height: int
    crop_x: int = 0
    crop_y: int = 0
    object_index: int = -1
    class_name: str | None = None
    raw_class: str | None = None
    label: int = -1
    x1: float | None = None
    y1: float | None = None
    x2: float | None = None
    y2: float | None = None
    poly: list[float] | None = field(default=None)
    difficult: bool = False
    source_file: str = ""
    source_line: int = 0
    sha256: str | None = None


assert tuple(f.name for f in fields(ManifestRow)) == COLUMNS


def to_frame(rows: Iterable[ManifestRow]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the manifest columns."""
    return pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))


def write_manifest(
    rows: Iterable[ManifestRow] | pd.DataFrame, target: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write the manifest atomically; paths become relative to ``target``'s folder.

    Returns the frame as written (relative paths).
    """
    target = Path(target)
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else to_frame(rows)
    frame["sha256"] = _image_hashes(frame)
    base = target.parent.resolve()
    frame["path"] = [
        Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in frame["path"]
    ]
    frame = frame.sort_values(["dataset", "split", "image_id", "object_index"], kind="stable")
    frame = frame.reset_index(drop=True)
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    with atomic_path(target, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return frame


def _image_hashes(frame: pd.DataFrame) -> list[str | None]:
    """The ``sha256`` column: the one given, else the hash of the image file (one read per
    image), None for a file that does not exist (validation reports it)."""
    given = frame["sha256"] if "sha256" in frame else pd.Series([None] * len(frame))
    known: dict[str, str | None] = {}
    out: list[str | None] = []
    for path, sha in zip(frame["path"], given, strict=True):
        if isinstance(sha, str) and sha:
            out.append(sha)
            continue
        if path not in known:
            known[path] = file_sha256(path) if Path(path).is_file() else None
        out.append(known[path])
    return out


def read_manifest(source: str | os.PathLike[str], absolute: bool = True) -> pd.DataFrame:
    """Read a manifest; with ``absolute`` the ``path`` column is resolved to absolute paths."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: manifest not found (run `babelrs data import` first)")
    try:
        table = pq.read_table(source)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ValueError(f"{source}: not a readable Parquet manifest ({exc})") from exc
    missing = set(COLUMNS) - set(table.column_names) - {"sha256"}  # older manifests lack it
    if missing:
        raise ValueError(f"{source}: manifest lacks columns {sorted(missing)}")
    frame = table.to_pandas()
    if "sha256" not in frame:
        frame["sha256"] = None
    if absolute:
        base = source.parent.resolve()
        frame["path"] = [os.path.normpath(base / p) for p in frame["path"]]
    return frame


def images(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image (the first row of each ``image_id``), the :data:`IMAGE_COLUMNS`."""
    return frame.drop_duplicates("image_id")[list(IMAGE_COLUMNS)].reset_index(drop=True)


def objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the rows that carry an object."""
    return frame[frame["object_index"] >= 0].reset_index(drop=True)
