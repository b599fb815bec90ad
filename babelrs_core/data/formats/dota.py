"""DOTA v1.0: aerial RGB / panchromatic images with oriented quadrilaterals (``labelTxt``).

Source
    https://captain-whu.github.io/DOTA/dataset.html (devkit: https://github.com/CAPTAIN-WHU/DOTA_devkit;
    example files: ``ashnair1/dotadevkit``; reader reference: torchgeo ``datasets/dota.py``).
    SOI-Det's 800-px tiles (``DOTA_800pix``) come from https://github.com/zcablii/SM3Det.

On-disk format
    ::

        DOTA/
          {train,val}/images/P0000.png
          {train,val}/labelTxt/P0000.txt      # SOI-Det: {train,val}/annfiles/P0000.txt

    A label file has two optional header lines (``imagesource:GoogleEarth``, ``gsd:0.1391`` where
    ``gsd`` may be ``null``/``None``), then one object per line::

        x1 y1 x2 y2 x3 y3 x4 y4 category difficult

    Coordinates are ints or floats (``1069.0``), vertices clockwise, the first one at the object's
    "head"; ``difficult`` is 0 or 1. Blank lines are ignored. An empty file is an image without
    objects. Images and label files are paired by file stem.

Classes
    The 15 v1.0 classes (plane, ship, storage-tank, baseball-diamond, tennis-court,
    basketball-court, ground-track-field, harbor, bridge, large-vehicle, small-vehicle, helicopter,
    roundabout, soccer-ball-field, swimming-pool), in any case and with spaces/underscores for
    hyphens; SOI-Det's union spellings ``Ship``, ``Harbor``, ``Bridge`` map to ship, harbor,
    bridge. Anything else (e.g. v1.5's ``container-crane``) is a :class:`FormatError`.

What the reader does
    * The polygon is kept exactly as written (vertex order included, not clipped); ``x1..y2`` is
      its enclosing box clipped to the image.
    * Objects with zero area, a box below ``importers.min_box_size_px`` or no overlap with the
      image are dropped and reported.
    * ``width``/``height`` come from the image header (DOTA labels carry no size).
    * A split folder with ``images/`` but no label folder (DOTA's test set) is skipped during
      split discovery (and reported); asking for it explicitly is an error.

License
    Academic use only; Google Earth terms apply to the Google Earth images.

Citation
    Xia et al., "DOTA: A Large-scale Dataset for Object Detection in Aerial Images", CVPR 2018.
    ``@inproceedings{xia2018dota, title={DOTA: ...}, booktitle={CVPR}, pages={3974--3983},
    year={2018}}``
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from babelrs_core.concepts import SPLITS, UnknownClassError, normalize
from babelrs_core.data.formats._common import (
    FormatReader,
    Kept,
    Placed,
    Release,
    finite,
    image_fields,
    image_rows,
    image_size,
    pair_by_stem,
    place,
    rel,
)
from babelrs_core.data.formats.errors import (
    UNLABELLED_SPLIT,
    Dropped,
    DropSink,
    FormatError,
    ignore_drop,
)
from babelrs_core.data.manifest import ManifestRow

DATASET = "dota"
MODALITY = "rgb"
IMAGES = "images"
#: Label folder names, in order of preference: DOTA's own, then SOI-Det / mmrotate's.
LABEL_DIRS: tuple[str, ...] = ("labelTxt", "annfiles")
LABEL_SUFFIX = ".txt"

_HEADER = re.compile(r"^(imagesource|gsd)\s*:(.*)$", re.IGNORECASE)
_NULL = {"", "null", "none", "nan"}
_FIELDS = "x1 y1 x2 y2 x3 y3 x4 y4 category difficult"


def label_dir(split_dir: Path) -> Path | None:
    """The label folder of a split (``labelTxt/`` or ``annfiles/``), if any."""
    return next((split_dir / n for n in LABEL_DIRS if (split_dir / n).is_dir()), None)


def discover_splits(root: Path, on_drop: DropSink = ignore_drop) -> list[str]:
    """Known splits with an ``images/`` and a label folder; unlabelled ones are reported."""
    found: list[str] = []
    for split in SPLITS:
        d = root / split
        if not (d / IMAGES).is_dir():
            continue
        if label_dir(d) is None:
            on_drop(Dropped(DATASET, MODALITY, split, rel(d, root), None, UNLABELLED_SPLIT))
            continue
        found.append(split)
    return found


class DotaReader(FormatReader[str]):
    """Rows of a DOTA (or SOI-Det ``DOTA_800pix``) folder, one per object; a unit is a split."""

    name = "DOTA"

    def units(self, release: Release, splits: Sequence[str] | None) -> list[str]:
        chosen = discover_splits(release.root, release.on_drop) if splits is None else list(splits)
        if not chosen:
            raise FormatError(
                release.root, None, "no {train,val,test}/images/ with labelTxt/ (or annfiles/)"
            )
        return chosen

    def files(self, release: Release, unit: str) -> Iterator[Iterable[ManifestRow]]:
        d = release.root / unit
        if not (d / IMAGES).is_dir():
            raise FormatError(d, None, f"split {unit!r}: no {IMAGES}/ folder")
        labels = label_dir(d)
        if labels is None:
            raise FormatError(d, None, f"split {unit!r}: no {' or '.join(LABEL_DIRS)} folder")
        for stem, image, label in pair_by_stem(d / IMAGES, labels, LABEL_SUFFIX):
            yield read_file(release, unit, stem, image, label)


#: The DOTA reader: ``read(root, params, splits=None, on_drop=ignore_drop)``.
read = DotaReader()


def parse_label_file(path: Path) -> tuple[dict[str, str | float | None], list[tuple]]:
    """Parse one label file.

    Returns the header (``imagesource``, ``gsd`` as float or ``None``) and one tuple
    ``(line, poly, raw_class, class_name, difficult)`` per object, in file order.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"not UTF-8 text: {exc}") from None
    header: dict[str, str | float | None] = {}
    objects: list[tuple] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        m = _HEADER.match(s)
        if m:
            key, value = m.group(1).lower(), m.group(2).strip()
            if key == "gsd":
                if value.lower() in _NULL:
                    header["gsd"] = None
                else:
                    try:
                        header["gsd"] = finite(value)
                    except ValueError:
                        raise FormatError(
                            path, lineno, f"gsd must be a number or null, got {value!r}"
                        ) from None
            else:
                header[key] = value
            continue
        tokens = s.split()
        if len(tokens) != 10:
            raise FormatError(
                path, lineno, f"expected 10 fields '{_FIELDS}', got {len(tokens)}: {s!r}"
            )
        poly = []
        for k, tok in enumerate(tokens[:8]):
            try:
                poly.append(finite(tok))
            except ValueError:
                name = ("x", "y")[k % 2] + str(k // 2 + 1)
                raise FormatError(
                    path, lineno, f"coordinate {name} is not a number: {tok!r}"
                ) from None
        raw, flag = tokens[8], tokens[9]
        try:
            name = normalize(DATASET, raw)
        except UnknownClassError as exc:
            raise FormatError(path, lineno, str(exc)) from None
        if flag not in ("0", "1"):
            raise FormatError(path, lineno, f"difficult must be 0 or 1, got {flag!r}")
        objects.append((lineno, poly, raw, name, flag == "1"))
    return header, objects


def read_file(
    release: Release, split: str, stem: str, image: Path, label: Path
) -> Iterator[ManifestRow]:
    """Rows of one image and its label file."""
    _, objects = parse_label_file(label)
    width, height = image_size(image, label)
    source = rel(label, release.root)
    min_size, on_drop = release.params.min_box_size_px, release.on_drop

    def kept() -> Iterator[Kept]:
        for lineno, poly, raw, name, difficult in objects:
            placed = place(poly, width, height, min_size, clip_poly=False)
            if not isinstance(placed, Placed):
                on_drop(
                    Dropped(
                        DATASET, MODALITY, split, source, lineno, placed.reason, raw, placed.detail
                    )
                )
                continue
            yield Kept(name, raw, placed, difficult, lineno)

    fields = image_fields(DATASET, MODALITY, split, stem, image, width, height, source)
    yield from image_rows(fields, kept())
