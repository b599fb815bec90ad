"""A tiny fake data set for pretraining tests: three sensors, class-specific shapes, a manifest.

Each class draws a distinctive shape (bright square, dark bar, ring ...) so that a few training
steps can lower the loss. SAR and IR images are grey files (replicated to three channels on load),
RGB images are colour files. One dataset split also gets a scenes file with captions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from babelrs_core.config import captions_beside
from babelrs_core.data.captions import collect_captions, write_captions
from babelrs_core.data.layout import scenes_file
from babelrs_core.data.manifest import ManifestRow, read_manifest, write_manifest
from babelrs_core.geometry import poly_from_hbox

FAKE_CLASSES = {
    "sardet": ("sar", ["ship", "car"]),
    "dota": ("rgb", ["plane", "ship"]),
    "dronevehicle": ("ir", ["car", "bus"]),
}


def _draw(img: np.ndarray, kind: int, x1: int, y1: int, x2: int, y2: int) -> None:
    if kind == 0:
        img[y1:y2, x1:x2] = 235
    else:
        img[y1:y2, x1:x2] = 20
        img[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = 160


def make_fake_dataset(
    root: Path, splits: dict[str, int] | None = None, size: int = 64, seed: int = 0
) -> Path:
    """Write images, a manifest and scene captions under ``root``; return the manifest path."""
    splits = splits or {"train": 6, "val": 2}
    rng = np.random.default_rng(seed)
    rows: list[ManifestRow] = []
    raw = root / "raw"
    for ds, (modality, classes) in FAKE_CLASSES.items():
        for split, n in splits.items():
            scenes = []
            for i in range(n):
                stem = f"{i:04d}"
                img = np.full((size, size), 90, np.uint8) + rng.integers(
                    0, 20, (size, size), dtype=np.uint8
                )
                objs = []
                for j in range(int(rng.integers(1, 3))):
                    kind = int(rng.integers(0, len(classes)))
                    w = int(rng.integers(size // 6, size // 3))
                    x1 = int(rng.integers(0, size - w)) if j == 0 else size - w - 1
                    y1 = int(rng.integers(0, size - w))
                    _draw(img, kind, x1, y1, x1 + w, y1 + w)
                    objs.append((classes[kind], x1, y1, x1 + w, y1 + w))
                path = raw / ds / split / f"{stem}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                if modality == "rgb":
                    Image.fromarray(np.stack([img, img // 2, 255 - img], -1)).save(path)
                else:
                    Image.fromarray(img).save(path)
                image_id = f"{ds}/{split}/{stem}"
                for k, (cls, x1, y1, x2, y2) in enumerate(objs):
                    rows.append(
                        ManifestRow(
                            image_id,
                            ds,
                            modality,
                            split,
                            str(path),
                            size,
                            size,
                            object_index=k,
                            class_name=cls,
                            raw_class=cls,
                            label=0,
                            x1=x1,
                            y1=y1,
                            x2=x2,
                            y2=y2,
                            poly=poly_from_hbox(x1, y1, x2, y2),
                            source_file=str(path),
                            source_line=k,
                        )
                    )
                names = " and ".join(o[0] for o in objs)
                scenes.append({"stem": stem, "caption": f"{names} on grey ground"})
            if ds == "sardet":
                target = scenes_file(raw, ds, split)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("".join(json.dumps(s) + "\n" for s in scenes))
    manifest = root / "manifest.parquet"
    write_manifest(rows, manifest)
    # what the import stage writes beside the manifest (the scenes' captions of its images)
    write_captions(collect_captions(raw, read_manifest(manifest)), captions_beside(manifest))
    return manifest
