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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from babelrs_core.errors import BabelrsError
from babelrs_core.io.atomic import atomic_path, write_json
from babelrs_core.registry.payload import OUTPUT_COLUMNS, POLYGON_COLUMNS, decode_image

FEATURE_PROPERTIES = ("score", "label", "class_name", "soi_name", "dataset", "modality")


class ModelLoadError(BabelrsError):
    """A model URI that does not resolve to a loadable model (the message says what to use)."""


def load_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` with the tracking URI babelrs uses everywhere; a URI that does
    not resolve raises ``ModelLoadError`` naming what exists (versions, gate decisions, aliases)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from babelrs_core.tracking import default_tracking_uri

    tracking_uri = default_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise explain_load_error(model_uri, tracking_uri, exc) from exc


def explain_load_error(model_uri: str, tracking_uri: str, exc: Exception) -> ModelLoadError:
    """One message for a model URI MLflow could not load: the URI form, the registered models,
    the versions with their gate decisions and aliases, or the unreachable server."""
    from babelrs_core.tracking import redact

    where = redact(tracking_uri)
    text = str(getattr(exc, "message", exc))
    if any(m in text for m in ("Max retries exceeded", "Connection refused", "API request to")):
        reason = _first_line(text)
        err = ModelLoadError(
            f"cannot reach the MLflow tracking server {where} ({reason}); "
            "start it or set MLFLOW_TRACKING_URI"
        )
        err.transient = True
        return err
    match = MODEL_URI.fullmatch(model_uri)
    if match is None:
        if "://" in model_uri or model_uri.startswith(("runs:/", "models:/", "/", ".")):
            return ModelLoadError(f"{model_uri}: {_first_line(text)}")
        return ModelLoadError(
            f"{model_uri}: not a model URI; use models:/<name>@<alias>, models:/<name>/<version> "
            "or runs:/<run_id>/<path> (e.g. models:/babelrs-detector@champion)"
        )
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        return _explain_registry(model_uri, name, alias, version, tracking_uri, where, text)
    except Exception as again:  # the registry itself cannot be read: say so, not a traceback
        return ModelLoadError(
            f"{model_uri}: {_first_line(text)} ({where}: {_first_line(str(again))})"
        )


#: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


def _explain_registry(
    model_uri: str,
    name: str,
    alias: str | None,
    version: str | None,
    tracking_uri: str,
    where: str,
    text: str,
) -> ModelLoadError:
    """``where``: the tracking URI as it may be shown (secrets masked)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    names = sorted(m.name for m in client.search_registered_models(max_results=50))
    if name not in names:
        known = (
            ", ".join(names) or "none (run `make run`, or set MLFLOW_TRACKING_URI to the server)"
        )
        return ModelLoadError(
            f"{model_uri}: no registered model {name!r} in {where}; registered: {known}"
        )
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    aliases = dict(client.get_registered_model(name).aliases or {})  # alias -> version
    lines = [f"  version {v.version}: {_gate_line(v.tags or {})}" for v in versions[-10:]]
    listing = "\n".join(lines) or "  (no versions)"
    alias_text = ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
    if alias is not None and alias not in aliases:
        hint = f"models:/{name}/{versions[-1].version}" if versions else f"models:/{name}/<version>"
        return ModelLoadError(
            f"{model_uri}: no version of {name!r} has the alias {alias!r} (aliases: {alias_text}); "
            f"versions and their gate decisions:\n{listing}\nuse a version directly, e.g. --model "
            f"{hint}, or promote one: babelrs registry promote --version <n>"
        )
    if version is not None and version not in {v.version for v in versions}:
        return ModelLoadError(
            f"{model_uri}: {name!r} has no version {version}; versions:\n{listing}"
        )
    return ModelLoadError(f"{model_uri}: {_first_line(text)}")


def _gate_line(tags: dict[str, str]) -> str:
    decision, reason = tags.get("gate.decision"), tags.get("gate.reason")
    if decision is None:
        return "not put through the gate"
    return f"gate {decision}" + (f" ({reason})" if reason else "")


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


def known_modalities() -> list[str]:
    """What ``--modality`` accepts: a sensor (sar | rgb | ir) or a dataset name."""
    from babelrs_core.concepts import DATASETS

    return sorted({d.modality for d in DATASETS.values()} | set(DATASETS))


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
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("no images given")
    known = known_modalities()
    if modality not in known:
        raise ValueError(f"unknown modality {modality!r}; use one of: {', '.join(known)}")
    data = read_image_bytes(files)
    model = load_model(model_uri)
    ids = [str(p) for p in files]
    dets = predict_images(model, data, modality, ids, score_thr)
    out = Path(out_dir)
    csv_path, json_path = write_detections(dets, out)
    result: dict[str, Any] = {
        "model_uri": model_uri,
        "images": len(files),
        "detections": len(dets),
        "csv": str(csv_path),
        "json": str(json_path),
    }
    if overlays:
        result["overlays"] = [str(p) for p in write_overlays(files, dets, out, overlay_thr)]
    return result
