"""Helpers shared by the format readers: the reader's opening (:class:`FormatReader`), the
dataset folder, image headers, split folders, box clean-up, the rows of one image."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from PIL import Image, UnidentifiedImageError

from babelrs_core.concepts import soi_label
from babelrs_core.config import Importers
from babelrs_core.data.formats.errors import (
    OUTSIDE_IMAGE,
    TOO_SMALL,
    ZERO_AREA,
    DropSink,
    FormatError,
    ignore_drop,
)
from babelrs_core.data.manifest import ManifestRow
from babelrs_core.geometry import hbox_from_poly, poly_area

#: Image file suffixes accepted when pairing images with label files (compared lower-case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


#: What a format reads one at a time: a split, or a split and a sensor.
Unit = TypeVar("Unit")


@dataclass(frozen=True)
class Release:
    """A release being read: its resolved folder, the ``importers`` params, where drops go."""

    root: Path
    params: Importers
    on_drop: DropSink


class FormatReader(ABC, Generic[Unit]):
    """A release format's reader, called as ``read(root, params, splits=None, on_drop=...)``.

    What every format shares lives here: the release folder is checked (:meth:`open`), the
    format names the units it will read (:meth:`units`: splits, or split and sensor pairs; a
    :class:`FormatError` when there is none), then each unit's annotation files (:meth:`files`),
    one lazy row stream a file, so that ``babelrs data validate --raw`` can report a broken file
    and read on.
    """

    #: The release's name in errors.
    name: str
    #: A folder the release folder must contain (``None``: any folder).
    inside: str | None = None

    def __call__(
        self,
        root: Path,
        params: Importers,
        splits: Sequence[str] | None = None,
        on_drop: DropSink = ignore_drop,
    ) -> Iterator[ManifestRow]:
        """Rows of the release under ``root``, one per object (``splits=None``: all found)."""
        release = self.open(root, params, on_drop)
        for unit in self.units(release, splits):
            for rows in self.files(release, unit):
                yield from rows

    def open(self, root: Path, params: Importers, on_drop: DropSink = ignore_drop) -> Release:
        """The release under ``root`` (:func:`dataset_root`)."""
        return Release(dataset_root(root, self.name, self.inside), params, on_drop)

    @abstractmethod
    def units(self, release: Release, splits: Sequence[str] | None) -> list[Unit]:
        """What to read, in order: the chosen splits, or those found on disk."""

    @abstractmethod
    def files(self, release: Release, unit: Unit) -> Iterator[Iterable[ManifestRow]]:
        """The rows of one unit, a lazy stream per annotation file."""


def dataset_root(root: Path, name: str, inside: str | None = None) -> Path:
    """``root`` resolved, the opening of every :class:`FormatReader`: a :class:`FormatError` when it
    is not a folder (``name`` says which dataset), or with ``inside`` when it lacks that folder."""
    root = Path(root).resolve()
    if inside is None:
        if not root.is_dir():
            raise FormatError(root, None, f"{name} folder not found")
    elif not (root / inside).is_dir():
        raise FormatError(root, None, f"not a {name} folder: no {inside}/ inside")
    return root


def image_size(image: Path, annotation: Path | None = None) -> tuple[int, int]:
    """(width, height) from the image header only (Pillow opens lazily, nothing is decoded)."""
    by = f" (referenced by {annotation})" if annotation is not None else ""
    if not image.is_file():
        raise FormatError(image, None, f"image file not found{by}")
    try:
        with Image.open(image) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise FormatError(image, None, f"not a readable image{by}: {exc}") from None


def check_size(
    image: Path, annotation: Path, line: int | None, width: int, height: int, what: str = ""
) -> None:
    """Raise a :class:`FormatError` naming both files when the header disagrees with the labels."""
    actual = image_size(image, annotation)
    if actual != (width, height):
        prefix = f"{what}: " if what else ""
        raise FormatError(
            annotation,
            line,
            f"{prefix}annotation says the image is {width}x{height} but {image} is "
            f"{actual[0]}x{actual[1]}",
        )


def rel(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root's parent (e.g. ``DOTA/train/labelTxt/P0000.txt``)."""
    try:
        return path.relative_to(root.parent).as_posix()
    except ValueError:
        return path.as_posix()


def files_by_stem(folder: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` (any case) by stem; stems must be unique."""
    wanted = {s.lower() for s in suffixes}
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in wanted or p.name.startswith("."):
            continue
        if p.stem in out:
            raise FormatError(p, None, f"two files share the stem {p.stem!r}: {out[p.stem].name}")
        out[p.stem] = p
    return out


def pair_by_stem(
    image_dir: Path, label_dir: Path, label_suffix: str
) -> list[tuple[str, Path, Path]]:
    """(stem, image, label) for every image; an unmatched image or label file is an error."""
    images = files_by_stem(image_dir, IMAGE_SUFFIXES)
    labels = files_by_stem(label_dir, [label_suffix])
    for stem, label in labels.items():
        if stem not in images:
            raise FormatError(
                label, None, f"label file without image: no {stem}.* image in {image_dir}"
            )
    for stem, image in images.items():
        if stem not in labels:
            raise FormatError(
                image,
                None,
                f"image without label file: expected {label_dir / (stem + label_suffix)} "
                "(an image without objects needs an empty label file)",
            )
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


def finite(token: object) -> float:
    """``token`` as a finite float; ``ValueError`` otherwise (bools are not numbers here)."""
    if isinstance(token, bool):
        raise ValueError(f"{token!r} is not a number")
    value = float(token)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ValueError(f"{token!r} is not a finite number")
    return value


@dataclass(frozen=True)
class Placed:
    """An object that survived :func:`place`: polygon and horizontal box in image pixels."""

    poly: list[float]
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Rejected:
    """An object that :func:`place` dropped."""

    reason: str
    detail: str


def place(
    poly: Sequence[float], width: int, height: int, min_size: float, clip_poly: bool
) -> Placed | Rejected:
    """Check an object against the image ``width`` x ``height`` and clip it.

    Dropped, in this order: zero area, a box narrower or lower than ``min_size``, no overlap with
    the image, and a box that is too small once clipped. The horizontal box is always clipped to
    the image; the polygon's vertices are clamped into it only with ``clip_poly`` (otherwise the
    polygon is returned exactly as given, vertex order included).
    """
    poly = [float(v) for v in poly]
    x1, y1, x2, y2 = hbox_from_poly(poly)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0 or poly_area(poly) <= 0:
        return Rejected(ZERO_AREA, f"box {w:g}x{h:g}")
    if w < min_size or h < min_size:
        return Rejected(TOO_SMALL, f"box {w:g}x{h:g} < {min_size:g}")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return Rejected(
            OUTSIDE_IMAGE, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) vs image {width}x{height}"
        )
    if clip_poly:
        poly = [
            min(max(v, 0.0), float(width if i % 2 == 0 else height)) for i, v in enumerate(poly)
        ]
        x1, y1, x2, y2 = hbox_from_poly(poly)
    else:
        x1, y1 = max(x1, 0.0), max(y1, 0.0)
        x2, y2 = min(x2, float(width)), min(y2, float(height))
    if x2 - x1 < min_size or y2 - y1 < min_size:
        return Rejected(TOO_SMALL, f"box {x2 - x1:g}x{y2 - y1:g} after clipping < {min_size:g}")
    return Placed(poly, (x1, y1, x2, y2))


def image_fields(
    dataset: str,
    modality: str,
    split: str,
    name: str,
    image: Path,
    width: int,
    height: int,
    source: str,
    crop: int = 0,
) -> ManifestRow:
    """The row of one image without an object: the columns all its rows share (``image_id =
    dataset/split/name``; ``crop``: the border cut off on every side, so ``width`` x ``height``
    is what is left)."""
    return ManifestRow(
        image_id=f"{dataset}/{split}/{name}",
        dataset=dataset,
        modality=modality,
        split=split,
        path=str(image),
        width=width,
        height=height,
        crop_x=crop,
        crop_y=crop,
        source_file=source,
    )


class Kept(NamedTuple):
    """An object a reader keeps: canonical and raw class, where it is, its flag and line."""

    name: str
    raw: str
    placed: Placed
    difficult: bool
    line: int


def image_rows(image: ManifestRow, kept: Iterable[Kept]) -> Iterator[ManifestRow]:
    """The manifest rows of one image (``image``: its :func:`image_fields`): one per kept object,
    numbered from 0 in order, or the image's own row when none is kept."""
    index = 0
    for obj in kept:
        x1, y1, x2, y2 = obj.placed.box
        yield replace(
            image,
            object_index=index,
            class_name=obj.name,
            raw_class=obj.raw,
            label=soi_label(image.dataset, obj.name),
            x1=x1,
            y1=y1,
            x2=x2,
            y2=y2,
            poly=obj.placed.poly,
            difficult=obj.difficult,
            source_line=obj.line,
        )
        index += 1
    if index == 0:
        yield image
