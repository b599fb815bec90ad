"""SARDet-100K: SAR object detection, COCO instances JSON with horizontal boxes.

Source
    https://github.com/zcablii/SARDet_100K (README, ``MSFA/configs/_base_/datasets/SARDet_100k.py``,
    ``MSFA/msfa/datasets/SAR_Det.py``); SOI-Det's ~50K subset ``SARDet_50K`` from
    https://github.com/zcablii/SM3Det (Kaggle ``greatbird/soi-det``).

On-disk format
    ::

        SARDet_100K/
          Annotations/{train,val,test}.json        # or SOI-Det's after_merge_{split}.json
          JPEGImages/{train,val,test}/*.png|*.jpg

    COCO instances JSON: ``images[]`` (``id``, ``file_name``, ``width``, ``height``),
    ``annotations[]`` (``image_id``, ``category_id``, ``bbox=[x, y, w, h]`` in absolute pixels,
    ``area``, ``iscrowd``, optional ``ignore``), ``categories[]`` (``id``, ``name``).
    ``file_name`` is resolved relative to ``JPEGImages/`` (``train/000001.png``, the MSFA
    convention) or, failing that, to ``JPEGImages/{split}/`` (``000001.png``).

Classes
    ship, aircraft, car, tank, bridge, harbor. Mapped **by name** (``categories[].name`` through
    :func:`babelrs_core.concepts.normalize`); the numeric ``category_id`` base (0 or 1) is never
    trusted.

What the reader does
    * ``bbox`` -> ``x1 y1 x2 y2`` and a clockwise polygon from that box.
    * Drops (and reports) boxes with ``area <= 0``, ``w`` or ``h`` below
      ``importers.min_box_size_px``, or no overlap with the image, like the MSFA loader; the
      others are clipped to the image.
    * ``iscrowd`` / ``ignore`` objects are kept with ``difficult = True``.
    * An image without (kept) annotations still gets one row with ``object_index == -1``.
    * ``width``/``height`` come from the JSON and are checked against the image header.
    * ``source_line`` is the index in ``annotations[]``; :class:`FormatError` uses the same index
      as its ``line`` (or the text line for JSON syntax errors).

License
    The SARDet-100K repository license was not checked; SM3Det / SOI-Det code is CC BY-NC 4.0 and
    the ten source datasets (HRSID, SSDD, MSAR, SAR-AIRcraft, ...) have their own, mostly academic,
    terms.

Citation
    Li et al., "SARDet-100K: Towards Open-Source Benchmark and ToolKit for Large-Scale SAR Object
    Detection", NeurIPS 2024. ``@inproceedings{li2024sardet100k, title={SARDet-100K: ...},
    booktitle={NeurIPS}, year={2024}}``
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from babelrs_core.concepts import SPLITS, UnknownClassError, normalize
from babelrs_core.data.formats._common import (
    FormatReader,
    Kept,
    Placed,
    Release,
    check_size,
    finite,
    image_fields,
    image_rows,
    place,
    rel,
)
from babelrs_core.data.formats.errors import (
    ZERO_AREA,
    Dropped,
    DropSink,
    FormatError,
)
from babelrs_core.data.manifest import ManifestRow
from babelrs_core.geometry import poly_from_hbox

DATASET = "sardet"
MODALITY = "sar"
ANNOTATIONS = "Annotations"
IMAGES = "JPEGImages"


def annotation_candidates(root: Path, split: str) -> list[Path]:
    """Where the JSON of ``split`` may be: SARDet-100K's name first, then SOI-Det's."""
    ann = root / ANNOTATIONS
    return [ann / f"{split}.json", ann / f"after_merge_{split}.json"]


def annotation_file(root: Path, split: str) -> Path | None:
    """The JSON file of ``split``, or ``None`` if there is none."""
    return next((p for p in annotation_candidates(root, split) if p.is_file()), None)


def discover_splits(root: Path) -> list[str]:
    """Known splits (train, val, test) that have an annotation file under ``root``."""
    return [s for s in SPLITS if annotation_file(root, s) is not None]


class SardetReader(FormatReader[str]):
    """Rows of a SARDet-100K (or SOI-Det ``SARDet_50K``) folder, one per object; a unit is a
    split."""

    name = "SARDet-100K"
    inside = ANNOTATIONS

    def units(self, release: Release, splits: Sequence[str] | None) -> list[str]:
        chosen = list(splits) if splits is not None else discover_splits(release.root)
        if not chosen:
            raise FormatError(
                release.root / ANNOTATIONS,
                None,
                "no {train,val,test}.json (or after_merge_*.json) found",
            )
        return chosen

    def files(self, release: Release, unit: str) -> Iterator[Iterable[ManifestRow]]:
        path = annotation_file(release.root, unit)
        if path is None:
            looked = ", ".join(p.name for p in annotation_candidates(release.root, unit))
            raise FormatError(release.root / ANNOTATIONS, None, f"split {unit!r}: none of {looked}")
        yield read_split(release, unit, path)


#: The SARDet-100K reader: ``read(root, params, splits=None, on_drop=ignore_drop)``.
read = SardetReader()


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise FormatError(
            path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"not UTF-8 text: {exc}") from None
    if not isinstance(data, dict):
        raise FormatError(path, None, f"top level must be an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise FormatError(path, None, f"missing key {key!r} (a COCO instances file has it)")
        if not isinstance(data[key], list):
            raise FormatError(path, None, f"{key!r} must be a list")
    return data


def _field(path: Path, where: str, index: int, entry: Any, key: str) -> Any:
    if not isinstance(entry, dict):
        raise FormatError(path, index, f"{where}[{index}] must be an object")
    if key not in entry:
        raise FormatError(path, index, f"{where}[{index}] lacks {key!r}")
    return entry[key]


def _int(path: Path, where: str, index: int, entry: Any, key: str, positive: bool = False) -> int:
    value = _field(path, where, index, entry, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise FormatError(path, index, f"{where}[{index}].{key} must be an integer, got {value!r}")
    if positive and value <= 0:
        raise FormatError(path, index, f"{where}[{index}].{key} must be > 0, got {value!r}")
    return int(value)


def _categories(path: Path, data: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """category id -> (canonical class, raw name)."""
    cats: dict[int, tuple[str, str]] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _int(path, "categories", i, cat, "id")
        raw = _field(path, "categories", i, cat, "name")
        if not isinstance(raw, str):
            raise FormatError(path, i, f"categories[{i}].name must be a string, got {raw!r}")
        if cid in cats:
            raise FormatError(path, i, f"categories[{i}]: duplicate category id {cid}")
        try:
            cats[cid] = (normalize(DATASET, raw), raw)
        except UnknownClassError as exc:
            raise FormatError(path, i, f"categories[{i}]: {exc}") from None
    return cats


def _resolve(root: Path, split: str, file_name: str) -> tuple[Path, list[Path]]:
    candidates = [root / IMAGES / file_name, root / IMAGES / split / file_name]
    return next((p for p in candidates if p.is_file()), candidates[0]), candidates


def read_split(release: Release, split: str, path: Path) -> Iterator[ManifestRow]:
    """Rows of one annotation file (``path``) of ``split``."""
    root, on_drop = release.root, release.on_drop
    data = _load(path)
    cats = _categories(path, data)
    source = rel(path, root)
    min_size = release.params.min_box_size_px

    images: dict[int, int] = {}  # image id -> index in images[]
    stems: dict[str, int] = {}
    for i, img in enumerate(data["images"]):
        iid = _int(path, "images", i, img, "id")
        if iid in images:
            raise FormatError(path, i, f"images[{i}]: duplicate image id {iid}")
        images[iid] = i
        name = _field(path, "images", i, img, "file_name")
        if not isinstance(name, str) or not name:
            raise FormatError(path, i, f"images[{i}].file_name must be a non-empty string")
        stem = Path(name).stem
        if stem in stems:
            raise FormatError(
                path,
                i,
                f"images[{i}]: image id {DATASET}/{split}/{stem} already used by "
                f"images[{stems[stem]}]",
            )
        stems[stem] = i
        _int(path, "images", i, img, "width", positive=True)
        _int(path, "images", i, img, "height", positive=True)

    per_image: dict[int, list[int]] = {iid: [] for iid in images}
    for j, ann in enumerate(data["annotations"]):
        iid = _int(path, "annotations", j, ann, "image_id")
        if iid not in images:
            raise FormatError(path, j, f"annotations[{j}]: image_id {iid} is not in images[]")
        cid = _int(path, "annotations", j, ann, "category_id")
        if cid not in cats:
            known = ", ".join(f"{k}={v[1]}" for k, v in sorted(cats.items()))
            raise FormatError(
                path, j, f"annotations[{j}]: category_id {cid} is not in categories ({known})"
            )
        per_image[iid].append(j)

    for iid, i in images.items():
        img = data["images"][i]
        name, width, height = img["file_name"], int(img["width"]), int(img["height"])
        image, candidates = _resolve(root, split, name)
        if not image.is_file():
            looked = " or ".join(str(c) for c in candidates)
            raise FormatError(
                path, i, f"images[{i}]: image {name!r} not found (looked for {looked})"
            )
        check_size(image, path, i, width, height, what=f"images[{i}]")
        fields = image_fields(
            DATASET, MODALITY, split, Path(name).stem, image, width, height, source
        )
        anns = data["annotations"]
        objects = (
            _object(path, source, split, j, anns[j], cats, (width, height), min_size, on_drop)
            for j in per_image[iid]
        )
        yield from image_rows(fields, (o for o in objects if o is not None))


def _object(
    path: Path,
    source: str,
    split: str,
    j: int,
    ann: dict[str, Any],
    cats: dict[int, tuple[str, str]],
    size: tuple[int, int],
    min_size: float,
    on_drop: DropSink,
) -> Kept | None:
    bbox = _field(path, "annotations", j, ann, "bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise FormatError(path, j, f"annotations[{j}].bbox must be [x, y, w, h], got {bbox!r}")
    try:
        x, y, w, h = (finite(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise FormatError(path, j, f"annotations[{j}].bbox: {exc}") from None
    name, raw = cats[int(ann["category_id"])]
    area = ann.get("area", w * h)
    try:
        area = finite(area)
    except (TypeError, ValueError) as exc:
        raise FormatError(path, j, f"annotations[{j}].area: {exc}") from None

    def drop(reason: str, detail: str) -> None:
        on_drop(Dropped(DATASET, MODALITY, split, source, j, reason, raw, detail))

    if area <= 0:
        drop(ZERO_AREA, f"area {area:g}")
        return None
    placed = place(poly_from_hbox(x, y, x + w, y + h), *size, min_size, True)
    if not isinstance(placed, Placed):
        drop(placed.reason, placed.detail)
        return None
    # the polygon of the clipped box, clockwise from its top-left corner
    placed = Placed(poly_from_hbox(*placed.box), placed.box)
    difficult = bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0))
    return Kept(name, raw, placed, difficult, j)
