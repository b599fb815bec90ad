"""The facts the image suite checks: one row per image of the manifest, each file opened once
(exists, decodes completely, decoded size, bands, dtype, pixel std, sha256) with a small thread
pool. The suite's rules over these facts are :func:`babelrs_core.data.validation.rules.image_rules`;
the sha256 comparison with the manifest is :mod:`babelrs_core.data.integrity`'s.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from babelrs_core.data.integrity import content_matches, recorded_sha256
from babelrs_core.data.manifest import images
from babelrs_core.io.hashing import file_sha256

FACT_COLUMNS = (
    "exists",
    "decodes",
    "error",
    "file_width",
    "file_height",
    "mode",
    "channels",
    "dtype",
    "std",
    "sha256",
)


def inspect_image(path: str, crop_x: int, crop_y: int, width: int, height: int) -> dict[str, Any]:
    """Facts about one image file: exists, decodes completely, size, bands, dtype, pixel std
    (over the manifest's window, e.g. inside DroneVehicle's white border). Never raises."""
    facts: dict[str, Any] = dict.fromkeys(FACT_COLUMNS)
    p = Path(path)
    facts["exists"] = p.is_file()
    if not facts["exists"]:
        facts["error"] = "image file not found"
        return facts
    try:
        facts["sha256"] = file_sha256(p)
    except OSError as exc:
        facts["error"] = str(exc)
    try:
        with Image.open(p) as im:
            im.load()  # a full decode: truncated files fail here
            facts["file_width"], facts["file_height"] = im.size
            facts["mode"] = im.mode
            facts["channels"] = len(im.getbands())
            arr = np.asarray(im)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBomb...)
        facts["decodes"] = False
        facts["error"] = str(exc) or type(exc).__name__
        return facts
    facts["decodes"] = True
    facts["dtype"] = str(arr.dtype)
    x0, y0 = max(int(crop_x), 0), max(int(crop_y), 0)
    window = arr[y0 : y0 + max(int(height), 0), x0 : x0 + max(int(width), 0)]
    facts["std"] = float(window.std()) if window.size else 0.0
    return facts


def image_facts(frame: pd.DataFrame, workers: int = 2, progress: bool = False) -> pd.DataFrame:
    """One row per image of ``frame`` (absolute paths) with :func:`inspect_image`'s facts and
    the expected file size (``width + 2 * crop_x`` x ``height + 2 * crop_y``: a crop is a border
    on every side, as DroneVehicle's)."""
    imgs = images(frame) if len(frame) else frame.iloc[0:0]
    cols = ["path", "crop_x", "crop_y", "width", "height"]
    args = [
        (str(p), _int(cx), _int(cy), _int(w), _int(h))
        for p, cx, cy, w, h in imgs[cols].itertuples(index=False)
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        stream = pool.map(lambda a: inspect_image(*a), args)
        facts = list(tqdm(stream, total=len(args), desc="check images", disable=not progress))
    out = imgs[["image_id", "dataset", "modality", "split", *cols]].reset_index(drop=True)
    table = pd.DataFrame(facts, columns=list(FACT_COLUMNS))
    for c in FACT_COLUMNS:
        out[c] = table[c]
    for c in ("file_width", "file_height", "channels", "std"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    out["expected_width"] = pd.to_numeric(out["width"]) + 2 * pd.to_numeric(out["crop_x"])
    out["expected_height"] = pd.to_numeric(out["height"]) + 2 * pd.to_numeric(out["crop_y"])
    # content unchanged since the manifest was written: None (not checked) when the manifest has
    # no hash for the image or the file is missing (image_exists reports that)
    recorded = recorded_sha256(frame)
    out["expected_sha256"] = [recorded.get(i) for i in out["image_id"]]
    out["content_ok"] = [
        content_matches(got, want)
        for got, want in zip(out["sha256"], out["expected_sha256"], strict=True)
    ]
    out.index.name = "_row"
    return out


def _int(v: Any) -> int:
    return 0 if v is None or pd.isna(v) else int(v)
