"""DroneVehicle: drone-borne RGB + infrared image pairs with oriented boxes (VOC-like XML).

Source
    https://github.com/VisDrone/DroneVehicle (README, downloads); XML quirks from downstream
    converters. SOI-Det uses the infrared half only.

On-disk format
    ::

        DroneVehicle/
          {split}/{split}img/00001.jpg      RGB          {split}/{split}imgr/00001.jpg     IR
          {split}/{split}label/00001.xml    RGB labels   {split}/{split}labelr/00001.xml   IR labels

    with ``split`` in train / val / test. The two modalities have **separate** label files with
    different object counts. Every image is 840x712: a 640x512 frame inside a 100-px white border
    (so that objects at the frame edge could be annotated). The XML::

        <annotation><filename>DJI_0458</filename>
          <size><width>840</width><height>712</height><depth>3</depth></size>
          <object><name>car</name><difficult>0</difficult>
            <polygon><x1>574</x1><y1>395</y1> ... <x4>578</x4><y4>466</y4></polygon>
          </object></annotation>

    Some objects have ``<bndbox><xmin/><ymin/><xmax/><ymax/></bndbox>`` instead of ``<polygon>``.
    ``<filename>`` is the original DJI name, **not** the file stem: images and XML files are
    paired by file stem only.

Classes
    car, truck, bus, van, freight car. Raw strings in the XML include the typos ``feright car``,
    ``feright_car``, ``feright`` (-> freight car) and ``truvk`` (-> truck), in any case
    (:func:`babelrs_core.concepts.normalize`). ``*`` (an annotator's "unsure" mark; one public
    converter maps it to freight car, another ignores it) is **dropped and reported**, never
    guessed.

What the reader does
    * ``importers.dronevehicle_modalities`` picks the halves: ``ir`` reads ``*imgr``/``*labelr``
      (``modality="ir"``), ``rgb`` reads ``*img``/``*label`` (``modality="rgb"``); the dataset name
      stays ``dronevehicle``.
    * Image ids: ``dronevehicle/{split}/{stem}`` for IR (the SOI-Det modality, so its ids never
      change with the config) and ``dronevehicle/{split}/{stem}_rgb`` for RGB; an RGB-IR pair
      shares the stem.
    * The white border (``importers.dronevehicle_border_px``, 100): ``width``/``height`` are the
      cropped size (840x712 -> 640x512), ``crop_x = crop_y = border``, and every coordinate has
      the border subtracted. Polygons are clamped into the cropped frame; an object wholly inside
      the border, one outside the file, one with zero area or below
      ``importers.min_box_size_px`` is dropped and reported.
    * ``<size>`` is checked against the image header (missing ``<size>``: the header is used).
    * ``source_line`` is the object's ordinal (1-based) in its XML file; errors and drop reports
      give the XML text line.

License
    VisDrone team terms: academic research use.

Citation
    Sun et al., "Drone-based RGB-Infrared Cross-Modality Vehicle Detection via Uncertainty-Aware
    Learning", IEEE TCSVT 32(10), 2022. ``@article{sun2022dronevehicle, title={Drone-based
    RGB-Infrared Cross-Modality Vehicle Detection via Uncertainty-Aware Learning},
    journal={IEEE TCSVT}, year={2022}}``
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

from babelrs_core.concepts import SPLITS, UnknownClassError, is_ignored, normalize
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
    IGNORED_CLASS,
    IN_BORDER,
    OUTSIDE_IMAGE,
    UNLABELLED_SPLIT,
    Dropped,
    DropSink,
    FormatError,
    ignore_drop,
)
from babelrs_core.data.manifest import ManifestRow
from babelrs_core.geometry import hbox_from_poly, poly_from_hbox

DATASET = "dronevehicle"
LABEL_SUFFIX = ".xml"
#: Folder-name suffix of each modality (``trainimgr`` = infrared).
MODALITY_SUFFIX: dict[str, str] = {"ir": "r", "rgb": ""}
#: Suffix appended to the stem in RGB image ids (IR ids are the plain stem).
ID_SUFFIX: dict[str, str] = {"ir": "", "rgb": "_rgb"}


def folders(root: Path, split: str, modality: str) -> tuple[Path, Path]:
    """(image folder, label folder) of one split and modality."""
    r = MODALITY_SUFFIX[modality]
    d = root / split
    return d / f"{split}img{r}", d / f"{split}label{r}"


def discover_splits(
    root: Path, modalities: Sequence[str], on_drop: DropSink = ignore_drop
) -> list[tuple[str, str]]:
    """(split, modality) pairs present under ``root``; image folders without labels are reported."""
    found: list[tuple[str, str]] = []
    for split in SPLITS:
        for modality in modalities:
            images, labels = folders(root, split, modality)
            if not images.is_dir():
                continue
            if not labels.is_dir():
                on_drop(
                    Dropped(DATASET, modality, split, rel(images, root), None, UNLABELLED_SPLIT)
                )
                continue
            found.append((split, modality))
    return found


class DroneVehicleReader(FormatReader[tuple[str, str]]):
    """Rows of a DroneVehicle folder, one per object, for the configured modalities; a unit is a
    (split, modality) pair."""

    name = "DroneVehicle"

    def units(self, release: Release, splits: Sequence[str] | None) -> list[tuple[str, str]]:
        modalities = list(dict.fromkeys(release.params.dronevehicle_modalities))
        if splits is not None:
            return [(s, m) for s in splits for m in modalities]
        pairs = discover_splits(release.root, modalities, release.on_drop)
        if not pairs:
            wanted = ", ".join(f"{{split}}/{{split}}img{MODALITY_SUFFIX[m]}" for m in modalities)
            raise FormatError(release.root, None, f"no split folders found (looked for {wanted})")
        return pairs

    def files(self, release: Release, unit: tuple[str, str]) -> Iterator[Iterable[ManifestRow]]:
        split, modality = unit
        images, labels = folders(release.root, split, modality)
        for folder in (images, labels):
            if not folder.is_dir():
                raise FormatError(folder, None, f"split {split!r} ({modality}): folder not found")
        for stem, image, label in pair_by_stem(images, labels, LABEL_SUFFIX):
            yield read_file(release, split, modality, stem, image, label)


#: The DroneVehicle reader: ``read(root, params, splits=None, on_drop=ignore_drop)``.
read = DroneVehicleReader()


@dataclass
class _Xml:
    root: ET.Element
    lines: dict[int, int]  # id(element) -> 1-based line of its start tag

    def line(self, el: ET.Element | None) -> int | None:
        return None if el is None else self.lines.get(id(el))


def parse_xml(path: Path) -> _Xml:
    """Parse an XML file keeping each element's line; syntax errors carry the parser's line."""
    builder = ET.TreeBuilder()
    lines: dict[int, int] = {}
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        lines[id(builder.start(tag, attrs))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as exc:
        raise FormatError(
            path,
            exc.lineno,
            f"malformed XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})",
        ) from None
    return _Xml(builder.close(), lines)


def _number(xml: _Xml, path: Path, parent: ET.Element, tag: str, what: str) -> float:
    el = parent.find(tag)
    if el is None or el.text is None or not el.text.strip():
        raise FormatError(path, xml.line(parent), f"{what}: missing <{tag}>")
    try:
        return finite(el.text.strip())
    except ValueError:
        raise FormatError(
            path, xml.line(el), f"{what}: <{tag}> is not a number: {el.text.strip()!r}"
        ) from None


def _size(xml: _Xml, path: Path) -> tuple[int, int, int | None] | None:
    size = xml.root.find("size")
    if size is None or (size.find("width") is None and size.find("height") is None):
        return None
    w = _number(xml, path, size, "width", "<size>")
    h = _number(xml, path, size, "height", "<size>")
    if w != int(w) or h != int(h) or w <= 0 or h <= 0:
        raise FormatError(path, xml.line(size), f"<size> must be positive integers, got {w}x{h}")
    return int(w), int(h), xml.line(size)


def read_file(
    release: Release, split: str, modality: str, stem: str, image: Path, label: Path
) -> Iterator[ManifestRow]:
    """Rows of one image and its XML file (paired by stem; ``<filename>`` is ignored)."""
    xml = parse_xml(label)
    if xml.root.tag != "annotation":
        raise FormatError(
            label, xml.line(xml.root), f"root element is <{xml.root.tag}>, expected <annotation>"
        )
    file_w, file_h = image_size(image, label)
    size = _size(xml, label)
    if size is not None and (size[0], size[1]) != (file_w, file_h):
        raise FormatError(
            label,
            size[2],
            f"<size> says {size[0]}x{size[1]} but {image} is {file_w}x{file_h}",
        )
    params, on_drop = release.params, release.on_drop
    border = params.dronevehicle_border_px
    width, height = file_w - 2 * border, file_h - 2 * border
    if width <= 0 or height <= 0:
        raise FormatError(
            image, None, f"{file_w}x{file_h} image is too small for a {border}-px border"
        )
    source = rel(label, release.root)

    def kept() -> Iterator[Kept]:
        for n, obj in enumerate(xml.root.findall("object"), start=1):
            line = xml.line(obj)
            what = f"object #{n}"
            name_el = obj.find("name")
            if name_el is None or name_el.text is None or not name_el.text.strip():
                raise FormatError(label, line, f"{what} has no <name>")
            raw = name_el.text.strip()

            def drop(reason: str, detail: str, raw: str = raw, line: int | None = line) -> None:
                on_drop(Dropped(DATASET, modality, split, source, line, reason, raw, detail))

            if is_ignored(DATASET, raw):
                drop(IGNORED_CLASS, f"{what}")
                continue
            try:
                name = normalize(DATASET, raw)
            except UnknownClassError as exc:
                raise FormatError(label, xml.line(name_el), f"{what}: {exc}") from None
            poly = _polygon(xml, label, obj, what)
            difficult = _difficult(xml, label, obj, what)
            shifted = [v - border for v in poly]
            placed = place(shifted, width, height, params.min_box_size_px, clip_poly=True)
            if not isinstance(placed, Placed):
                reason = placed.reason
                if reason == OUTSIDE_IMAGE and border > 0 and _overlaps(poly, file_w, file_h):
                    reason = IN_BORDER
                drop(reason, f"{what}: {placed.detail}")
                continue
            yield Kept(name, raw, placed, difficult, n)

    name = f"{stem}{ID_SUFFIX[modality]}"
    fields = image_fields(DATASET, modality, split, name, image, width, height, source, border)
    yield from image_rows(fields, kept())


def _polygon(xml: _Xml, path: Path, obj: ET.Element, what: str) -> list[float]:
    polygon = obj.find("polygon")
    if polygon is not None:
        return [
            _number(xml, path, polygon, f"{axis}{i}", what) for i in range(1, 5) for axis in "xy"
        ]
    box = obj.find("bndbox")
    if box is not None:
        x1, y1, x2, y2 = (
            _number(xml, path, box, t, what) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        return poly_from_hbox(x1, y1, x2, y2)
    raise FormatError(path, xml.line(obj), f"{what} has neither <polygon> nor <bndbox>")


def _difficult(xml: _Xml, path: Path, obj: ET.Element, what: str) -> bool:
    el = obj.find("difficult")
    if el is None or el.text is None or not el.text.strip():
        return False
    flag = el.text.strip()
    if flag not in ("0", "1"):
        raise FormatError(path, xml.line(el), f"{what}: <difficult> must be 0 or 1, got {flag!r}")
    return flag == "1"


def _overlaps(poly: Sequence[float], width: int, height: int) -> bool:
    x1, y1, x2, y2 = hbox_from_poly(poly)
    return x2 > 0 and y2 > 0 and x1 < width and y1 < height
