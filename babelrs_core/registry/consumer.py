"""Consumers of a registered detector: load ``models:/<name>@champion`` (or any model URI), predict
on image files, write detections as CSV and GeoJSON-like JSON, and optional PNG overlays.

    from babelrs_core.registry.consumer import predict_files
    predict_files("models:/babelrs-detector@champion", ["scene.png"], "sar", "out/")

The model is loaded through MLflow only (``mlflow.pyfunc.load_model``); ``MLFLOW_TRACKING_URI``
says which server (default: the local store ``outputs/mlflow``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from babelrs_core.io.atomic import atomic_path, write_json
from babelrs_core.registry.payload import OUTPUT_COLUMNS, POLYGON_COLUMNS, decode_image

FEATURE_PROPERTIES = ("score", "label", "class_name", "soi_name", "dataset", "modality")


def load_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` with the tracking URI babelrs uses everywhere."""
    import mlflow

    from babelrs_core.tracking import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri())
    return mlflow.pyfunc.load_model(model_uri)


def read_image_bytes(paths: Sequence[str | os.PathLike[str]]) -> list[bytes]:
    """The files' bytes, each checked to decode (errors name the file)."""
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: image file not found")
        data = p.read_bytes()
        decode_image(data, str(p))
        out.append(data)
    return out


def predict_images(
    model: Any,
    images: Sequence[Any],
    modality: str,
    image_ids: Sequence[str] | None = None,
    score_thr: float = 0.0,
) -> pd.DataFrame:
    """Detections of a loaded pyfunc model for arrays or encoded images (the output table)."""
    from babelrs_core.registry.payload import input_frame

    frame = input_frame(list(images), modality, image_ids)
    return model.predict(frame, params={"score_thr": float(score_thr)})


def feature_collection(dets: pd.DataFrame) -> dict[str, Any]:
    """GeoJSON-like FeatureCollection: one Polygon per box in **pixel** coordinates (x right,
    y down; no CRS), properties = score, class, dataset, modality, image."""
    feats = []
    for row in dets.itertuples(index=False):
        x1, y1, x2, y2 = (float(row.x1), float(row.y1), float(row.x2), float(row.y2))
        ring = [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]
        corners = [float(getattr(row, c)) for c in POLYGON_COLUMNS]
        if not any(math.isnan(v) for v in corners):  # oriented detection: its own polygon
            ring = [[corners[k], corners[k + 1]] for k in range(0, 8, 2)]
            ring.append(ring[0])
        props = {k: _plain(getattr(row, k)) for k in FEATURE_PROPERTIES}
        if not math.isnan(float(row.angle)):
            props["angle"] = float(row.angle)
        props["image"] = str(row.image_id)
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "coordinates": "pixel", "features": feats}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def write_detections(dets: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """``detections.csv`` and ``detections.json`` (FeatureCollection) in ``out_dir``."""
    out_dir = Path(out_dir)
    csv_path = out_dir / "detections.csv"
    with atomic_path(csv_path, suffix=".csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(OUTPUT_COLUMNS)
        for row in dets[list(OUTPUT_COLUMNS)].itertuples(index=False):
            writer.writerow(row)
    json_path = out_dir / "detections.json"
    write_json(json_path, feature_collection(dets))
    return csv_path, json_path


def write_overlays(
    paths: Sequence[Path], dets: pd.DataFrame, out_dir: Path, score_thr: float
) -> list[Path]:
    """One PNG per image with its detections drawn (``<stem>.overlay.png``)."""
    from babelrs_core.detector.inference import as_rgb_uint8
    from babelrs_core.evaluation.plots import draw_detections, save_png

    written = []
    for i, path in enumerate(paths):
        image = as_rgb_uint8(decode_image(Path(path).read_bytes(), str(path)))
        mine = dets[dets["image_index"] == i].to_dict("records")
        for det in mine:  # oriented detections are drawn as their polygon
            corners = [det[c] for c in POLYGON_COLUMNS]
            det["polygon"] = None if any(math.isnan(v) for v in corners) else corners
        target = Path(out_dir) / f"{Path(path).stem}.overlay.png"
        written.append(save_png(draw_detections(image, [], mine, score_thr), target))
    return written


def predict_files(
    model_uri: str,
    paths: Sequence[str | os.PathLike[str]],
    modality: str,
    out_dir: str | os.PathLike[str],
    score_thr: float = 0.0,
    overlays: bool = False,
    overlay_thr: float = 0.3,
) -> dict[str, Any]:
    """Load ``model_uri``, predict on image files, write CSV / JSON (and overlays); a summary."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no images given")
    data = read_image_bytes(paths)
    model = load_model(model_uri)
    ids = [str(p) for p in paths]
    dets = predict_images(model, data, modality, ids, score_thr)
    out = Path(out_dir)
    csv_path, json_path = write_detections(dets, out)
    result: dict[str, Any] = {
        "model_uri": model_uri,
        "images": len(paths),
        "detections": len(dets),
        "csv": str(csv_path),
        "json": str(json_path),
    }
    if overlays:
        result["overlays"] = [str(p) for p in write_overlays(paths, dets, out, overlay_thr)]
    return result
