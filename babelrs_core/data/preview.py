"""A PNG mosaic of samples per modality with their boxes drawn (``babelrs data preview``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from babelrs_core.concepts import DATASETS
from babelrs_core.data.manifest import images, read_manifest
from babelrs_core.io.atomic import atomic_path
from babelrs_core.io.images import load_image

_LABEL_W = 120  # left column with the dataset / modality name


def class_colour(name: str) -> tuple[int, int, int]:
    """A stable, saturated colour for a class name."""
    h = hashlib.sha1(name.encode()).digest()
    rgb = np.array([h[0], h[1], h[2]], dtype=float)
    rgb = 80 + 175 * (rgb - rgb.min()) / max(rgb.max() - rgb.min(), 1.0)
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def render_tile(frame: pd.DataFrame, image_row: pd.Series, tile_px: int) -> Image.Image:
    """One image with its objects drawn (polygons for oriented datasets, boxes otherwise)."""
    arr = load_image(
        image_row["path"],
        image_row["crop_x"],
        image_row["crop_y"],
        image_row["width"],
        image_row["height"],
    )
    scale = tile_px / max(arr.shape[0], arr.shape[1])
    tile = Image.fromarray(arr).resize(
        (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale))),
        Image.Resampling.BILINEAR,
    )
    draw = ImageDraw.Draw(tile)
    font = _font(11)
    oriented = DATASETS[image_row["dataset"]].box_type == "obox"
    objs = frame[(frame["image_id"] == image_row["image_id"]) & (frame["object_index"] >= 0)]
    for _, obj in objs.iterrows():
        colour = class_colour(obj["class_name"])
        if oriented and obj["poly"] is not None:
            pts = [
                (float(x) * scale, float(y) * scale)
                for x, y in zip(obj["poly"][0::2], obj["poly"][1::2], strict=True)
            ]
            draw.polygon(pts, outline=colour, width=2)
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
            anchor = pts[0]
        else:
            box = [obj["x1"] * scale, obj["y1"] * scale, obj["x2"] * scale, obj["y2"] * scale]
            draw.rectangle(box, outline=colour, width=2)
            anchor = (box[0], box[1])
        draw.text(
            (anchor[0] + 2, max(anchor[1] - 12, 0)), obj["class_name"], fill=colour, font=font
        )
    return tile


def make_mosaic(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    per_modality: int = 4,
    tile_px: int = 256,
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Write a mosaic with one row per dataset (modality) and ``per_modality`` samples each."""
    frame = read_manifest(manifest)
    frame = frame[frame["split"] == split]
    if frame.empty:
        raise ValueError(f"{manifest}: no images in split {split!r} to preview")
    imgs = images(frame)
    rows = []
    for ds in [d for d in DATASETS if d in set(imgs["dataset"])]:
        pool = imgs[imgs["dataset"] == ds]
        picks = pool.sample(n=min(per_modality, len(pool)), random_state=seed)
        rows.append(
            (
                ds,
                pool["modality"].iloc[0],
                [render_tile(frame, r, tile_px) for _, r in picks.iterrows()],
            )
        )
    pad = 6
    row_h = tile_px + pad
    width = _LABEL_W + per_modality * (tile_px + pad)
    mosaic = Image.new("RGB", (width, len(rows) * row_h + pad), (24, 24, 28))
    draw = ImageDraw.Draw(mosaic)
    font = _font(16)
    for r, (ds, modality, tiles) in enumerate(rows):
        y = pad + r * row_h
        draw.text(
            (8, y + tile_px // 2 - 20), modality.upper(), fill=(235, 235, 235), font=_font(22)
        )
        draw.text((8, y + tile_px // 2 + 8), ds, fill=(170, 170, 170), font=font)
        for c, tile in enumerate(tiles):
            mosaic.paste(tile, (_LABEL_W + c * (tile_px + pad), y))
    with atomic_path(out, suffix=".png") as tmp:
        mosaic.save(tmp, format="PNG", optimize=True)
    return Path(out)
