"""Writers of the three real on-disk formats (docs/soi_mini.md §5) and of the scene-graph JSONL.

* SARDet-100K: COCO instances JSON (``images``, ``annotations`` with ``bbox=[x, y, w, h]``,
  ``categories`` by name, 1-based ids), 8-bit SAR saved as 3-channel PNG (or JPEG);
* DOTA v1.0: ``imagesource:`` / ``gsd:`` header, then ``x1 y1 ... x4 y4 class difficult`` lines
  (clockwise, head vertex first);
* DroneVehicle: VOC-like XML with ``<polygon><x1>..<y4>`` (or ``<bndbox>``) in the coordinates of
  the image padded with a white border.

Everything is rendered to bytes / text here; the generator writes it inside a temporary folder
that is swapped in atomically, so nothing half-written is ever visible.
"""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from babelrs_core.concepts import DATASETS


def gray_to_rgb(img: np.ndarray) -> np.ndarray:
    """Replicate an (H, W) image to (H, W, 3), as SAR and IR datasets store them."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def pad_border(img: np.ndarray, border: int, value: int = 255) -> np.ndarray:
    """Pad an (H, W[, C]) image with a ``border``-px frame of ``value`` on every side."""
    pad = ((border, border), (border, border)) + (((0, 0),) if img.ndim == 3 else ())
    return np.pad(img, pad, mode="constant", constant_values=value)


def save_image(
    path: Path, img: np.ndarray, jpeg_quality: int | None = None, png_level: int | None = None
) -> None:
    """Save as PNG or JPEG (by suffix); grayscale is replicated to 3 channels. ``png_level``:
    a plain PNG (:func:`png_bytes`) at this zlib level instead of Pillow's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = gray_to_rgb(img)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(rgb).save(path, format="JPEG", quality=jpeg_quality or 95)
    elif png_level is None:
        Image.fromarray(rgb).save(path, format="PNG")
    else:
        path.write_bytes(png_bytes(rgb, png_level))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(img: np.ndarray, level: int = 1) -> bytes:
    """A plain 8-bit RGB PNG of an (H, W, 3) uint8 image: no row filters, one zlib stream at
    ``level`` (0-9). About twice as fast as Pillow's adaptive filters at level 1; any PNG
    reader decodes it."""
    h, w, c = img.shape
    if c != 3 or img.dtype != np.uint8:
        raise ValueError(f"png_bytes wants (H, W, 3) uint8, got {img.shape} {img.dtype}")
    rows = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # each row: filter type 0, then RGB bytes
    rows[:, 1:] = img.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bit, truecolour, no interlace
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(rows.tobytes(), level)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(tag, data) for tag, data in chunks)


# ---------------------------------------------------------------------------------------------
# SARDet-100K (COCO)


def sardet_categories() -> list[dict[str, Any]]:
    """All six SARDet classes with 1-based ids, in the reference order."""
    return [{"id": i + 1, "name": n} for i, n in enumerate(DATASETS["sardet"].class_names)]


def coco_document(
    images: list[dict[str, Any]], annotations: list[dict[str, Any]]
) -> dict[str, Any]:
    """A COCO instances document (SARDet-100K's annotation format)."""
    return {
        "info": {"description": "SOI-mini SAR (SARDet-100K format)", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": sardet_categories(),
    }


def coco_annotation(ann_id: int, image_id: int, cls: str, hbox: Sequence[float]) -> dict[str, Any]:
    """One COCO annotation; ``hbox = [x, y, w, h]`` in pixels."""
    cat = DATASETS["sardet"].class_names.index(cls) + 1
    x, y, w, h = (round(float(v), 2) for v in hbox)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [x, y, w, h],
        "area": round(w * h, 2),
        "iscrowd": 0,
    }


def coco_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1) + "\n"


# ---------------------------------------------------------------------------------------------
# DOTA v1.0


def dota_text(
    objects: Sequence[tuple[Sequence[float], str, int]],
    gsd_m: float | None,
    imagesource: str = "GoogleEarth",
) -> str:
    """labelTxt content: header lines, then ``x1 y1 ... x4 y4 class difficult`` per object."""
    lines = [f"imagesource:{imagesource}", f"gsd:{gsd_m if gsd_m is not None else 'null'}"]
    for poly, cls, difficult in objects:
        coords = " ".join(f"{float(v):.1f}" for v in poly)
        lines.append(f"{coords} {cls} {int(difficult)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# DroneVehicle


@dataclass(frozen=True)
class VocObject:
    """One DroneVehicle object: raw class string and padded-image geometry."""

    name: str
    polygon: Sequence[float]  # 8 values, already in padded-image pixels
    use_bndbox: bool = False
    difficult: int = 0


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def dronevehicle_xml(
    filename: str, folder: str, width: int, height: int, objects: Sequence[VocObject]
) -> str:
    """The VOC-like XML of DroneVehicle (sizes and coordinates of the padded image)."""
    root = ET.Element("annotation")
    _sub(root, "folder", folder)
    _sub(root, "filename", filename)
    size = _sub(root, "size")
    _sub(size, "width", width)
    _sub(size, "height", height)
    _sub(size, "depth", 3)
    _sub(root, "segmented", 0)
    for o in objects:
        el = _sub(root, "object")
        _sub(el, "name", o.name)
        _sub(el, "pose", "Unspecified")
        _sub(el, "truncated", 0)
        _sub(el, "difficult", o.difficult)
        pts = [round(float(v)) for v in o.polygon]
        if o.use_bndbox:
            box = _sub(el, "bndbox")
            xs, ys = pts[0::2], pts[1::2]
            for tag, v in (
                ("xmin", min(xs)),
                ("ymin", min(ys)),
                ("xmax", max(xs)),
                ("ymax", max(ys)),
            ):
                _sub(box, tag, v)
        else:
            poly = _sub(el, "polygon")
            for i in range(4):
                _sub(poly, f"x{i + 1}", pts[2 * i])
                _sub(poly, f"y{i + 1}", pts[2 * i + 1])
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------------
# Scene graphs


def scenes_text(records: Sequence[dict[str, Any]]) -> str:
    """JSON lines, one scene graph per image, keys sorted (byte-stable)."""
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
