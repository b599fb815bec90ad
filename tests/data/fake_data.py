"""Tiny fake datasets in the three real release layouts (torchgeo-style data makers).

:func:`make_raw` writes a *valid* raw root (every class of val also in train, noisy images that
decode, sizes that match the labels)::

    raw/SARDet_100K/Annotations/{train,val}.json + JPEGImages/{train,val}/*.png   (SAR, gray)
    raw/DOTA/{train,val}/images/*.png + labelTxt/*.txt                          (RGB)
    raw/DroneVehicle/{train,val}/{split}imgr/*.jpg + {split}labelr/*.xml        (IR, 10-px border)

and :func:`make_dataset` imports it into a manifest. Tests then break one thing at a time.
``params()`` returns the matching params (10-px DroneVehicle border, observed train classes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from babelrs_core.config import Params, parse_params
from babelrs_core.data.importing import import_datasets
from babelrs_core.data.layout import dataset_roots

BORDER = 10  # DroneVehicle border used by the fake IR images (real: 100)
SIZES = {"sardet": (64, 48), "dota": (64, 64), "dronevehicle": (80 + 2 * BORDER, 64 + 2 * BORDER)}

#: dataset -> split -> list of images, each a list of (class, x1, y1, x2, y2) boxes.
OBJECTS: dict[str, dict[str, list[list[tuple[str, float, float, float, float]]]]] = {
    "sardet": {
        "train": [[("ship", 4, 4, 20, 12), ("car", 30, 20, 40, 30)], [("ship", 10, 10, 30, 30)]],
        "val": [[("car", 5, 5, 15, 15)]],
    },
    "dota": {
        "train": [[("plane", 8, 8, 30, 24), ("ship", 40, 40, 60, 56)], [("plane", 2, 2, 12, 12)]],
        "val": [[("ship", 20, 20, 40, 30)]],
    },
    "dronevehicle": {
        "train": [[("car", 10, 10, 30, 20), ("truck", 40, 30, 70, 50)], [("car", 5, 5, 20, 15)]],
        "val": [[("truck", 20, 20, 50, 40)]],
    },
}

PARAMS: dict[str, Any] = {
    "importers": {"dronevehicle_border_px": BORDER},
    "validation": {"train_classes": "observed", "data_docs": False, "max_examples": 5},
}


def params(**sections: Any) -> Params:
    """Params matching the fake data, with sections merged over :data:`PARAMS` (one level)."""
    data = {k: dict(v) for k, v in PARAMS.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_params(data, "fake params")


def noise_image(path: Path, size: tuple[int, int], mode: str, seed: int, border: int = 0) -> Path:
    """Random texture (never constant) in ``mode``; a white ``border`` as DroneVehicle has."""
    w, h = size
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    arr = rng.integers(30, 220, size=shape, dtype=np.uint8)
    if border:
        arr[:border], arr[-border:], arr[:, :border], arr[:, -border:] = 255, 255, 255, 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(
        arr, mode
    ).save(path)
    return path


def _poly(x1: float, y1: float, x2: float, y2: float, dx: float = 0.0) -> list[float]:
    return [x1 + dx, y1 + dx, x2 + dx, y1 + dx, x2 + dx, y2 + dx, x1 + dx, y2 + dx]


def write_sardet(root: Path, seed: int = 0) -> Path:
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(["ship", "aircraft", "car"])]
    ids = {c["name"]: c["id"] for c in cats}
    for split, imgs in OBJECTS["sardet"].items():
        images, anns = [], []
        for i, objs in enumerate(imgs):
            name = f"{split[0]}{i:05d}.png"
            noise_image(root / "JPEGImages" / split / name, SIZES["sardet"], "L", seed + i)
            w, h = SIZES["sardet"]
            images.append({"id": i, "file_name": name, "width": w, "height": h})
            for cls, x1, y1, x2, y2 in objs:
                anns.append(
                    {
                        "id": len(anns),
                        "image_id": i,
                        "category_id": ids[cls],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        ann = root / "Annotations" / f"{split}.json"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def write_dota(root: Path, seed: int = 100) -> Path:
    for split, imgs in OBJECTS["dota"].items():
        for i, objs in enumerate(imgs):
            stem = f"P{split[0]}{i:03d}"
            noise_image(root / split / "images" / f"{stem}.png", SIZES["dota"], "RGB", seed + i)
            lines = ["imagesource:GoogleEarth", "gsd:0.5"]
            for cls, *box in objs:
                lines.append(" ".join(f"{v:g}" for v in _poly(*box)) + f" {cls} 0")
            label = root / split / "labelTxt" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + "\n")
    return root


def write_dronevehicle(root: Path, seed: int = 200) -> Path:
    w, h = SIZES["dronevehicle"]
    for split, imgs in OBJECTS["dronevehicle"].items():
        for i, objs in enumerate(imgs):
            stem = f"{i + 1:05d}"
            image = root / split / f"{split}imgr" / f"{stem}.jpg"
            noise_image(image, (w, h), "L", seed + i, border=BORDER)
            parts = [
                f"<annotation>\n<filename>DJI_{i:04d}</filename>",
                f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
            ]
            for cls, *box in objs:
                p = _poly(*box, dx=BORDER)
                coords = "".join(
                    f"<x{k + 1}>{p[2 * k]:g}</x{k + 1}><y{k + 1}>{p[2 * k + 1]:g}</y{k + 1}>"
                    for k in range(4)
                )
                parts.append(
                    f"<object>\n<name>{cls}</name>\n<difficult>0</difficult>\n"
                    f"<polygon>{coords}</polygon>\n</object>"
                )
            parts.append("</annotation>")
            label = root / split / f"{split}labelr" / f"{stem}.xml"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(parts) + "\n")
    return root


def make_raw(raw: Path) -> dict[str, Path]:
    """Write the three fake datasets under ``raw``; return dataset -> root."""
    roots = dataset_roots(raw)
    write_sardet(roots["sardet"])
    write_dota(roots["dota"])
    write_dronevehicle(roots["dronevehicle"])
    return roots


def make_dataset(dest: Path) -> tuple[dict[str, Path], Path]:
    """``dest/raw`` (three datasets) imported into ``dest/manifest/fake.parquet``."""
    roots = make_raw(Path(dest) / "raw")
    manifest = Path(dest) / "manifest" / "fake.parquet"
    import_datasets(roots, manifest, params(), progress=False)
    return roots, manifest
