"""The registered model's contract: input and output tables, image encoding, MLflow signature.

Input (a pandas DataFrame, one row per image)::

    image      bytes   an encoded image file (PNG, TIFF, JPEG, ...); base64 text in JSON payloads
    modality   str     sar | rgb | ir (or a dataset name: sardet | dota | dronevehicle)
    image_id   str     optional; copied to the output rows (default: the row number)

Output (one row per detection, highest score first within an image)::

    image_index int, image_id str, x1 y1 x2 y2 float (input pixels), score float, label int,
    class_name str, soi_name str, dataset str, modality str,
    px1 py1 px2 py2 px3 py3 px4 py4 float   oriented heads (RGB / IR): the box's corners in DOTA
                                            order (clockwise on screen from the head vertex);
                                            NaN for horizontal heads (SAR)
    angle float                             oriented heads: le90 angle of the box in radians
                                            (cx, cy, w, h from the corners); NaN for horizontal

Arrays are sent as lossless PNG (:func:`encode_image`); the pixel values the model sees are the
same as for the array itself (``uint8`` after
:func:`~babelrs_core.detector.inference.as_rgb_uint8`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from babelrs_core.detector.inference import DETECTION_COLUMNS, as_rgb_uint8
from babelrs_core.errors import BadInputError

INPUT_COLUMNS = ("image", "modality", "image_id")
POLYGON_COLUMNS = ("px1", "py1", "px2", "py2", "px3", "py3", "px4", "py4")
OUTPUT_COLUMNS = (
    "image_index",
    "image_id",
    *DETECTION_COLUMNS,
    "dataset",
    "modality",
    *POLYGON_COLUMNS,
    "angle",
)


def flat_polygon(det: dict[str, Any]) -> dict[str, float]:
    """The polygon / angle columns of one inference record (NaN where the head is horizontal)."""
    poly, rbox = det.get("polygon"), det.get("rbox")
    values = [float(v) for v in poly] if poly is not None else [float("nan")] * 8
    out = dict(zip(POLYGON_COLUMNS, values, strict=True))
    out["angle"] = float(rbox[4]) if rbox is not None else float("nan")
    return out


class PayloadError(BadInputError):
    """An input row cannot be turned into an image (names the row and the problem)."""


def encode_image(image: np.ndarray) -> bytes:
    """PNG bytes of an image array (grey stays one band; values as the model would read them)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        grey = as_rgb_uint8(arr)[..., 0]
        im = Image.fromarray(grey, mode="L")
    else:
        im = Image.fromarray(as_rgb_uint8(arr), mode="RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: Any, where: str = "image") -> np.ndarray:
    """An image array from encoded bytes (or base64 text of them); 16-bit and float bands are
    returned as numbers (the detector clips them to 0..255)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError:
            raise PayloadError(f"{where}: text is not base64-encoded image bytes") from None
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise PayloadError(f"{where}: expected encoded image bytes, got {type(data).__name__}")
    if not data:
        raise PayloadError(f"{where}: empty image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode in ("L", "RGB", "I;16", "I", "F"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise PayloadError(f"{where}: cannot decode image ({exc})") from None
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
    return arr


def input_frame(
    images: Sequence[np.ndarray | bytes],
    modality: str | Sequence[str],
    image_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The model's input table for ``images`` (arrays are PNG-encoded, bytes kept as they are)."""
    mods = [modality] * len(images) if isinstance(modality, str) else list(modality)
    if len(mods) != len(images):
        raise ValueError(f"{len(images)} images but {len(mods)} modalities")
    data: dict[str, Any] = {
        "image": [im if isinstance(im, bytes) else encode_image(im) for im in images],
        "modality": mods,
    }
    if image_ids is not None:
        data["image_id"] = [str(i) for i in image_ids]
    return pd.DataFrame(data)


def json_payload(frame: pd.DataFrame, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The REST body for ``/invocations`` (``dataframe_split``, images base64-encoded)."""
    cols = [c for c in INPUT_COLUMNS if c in frame.columns]
    rows = []
    for _, row in frame[cols].iterrows():
        rows.append(
            [base64.b64encode(row[c]).decode() if c == "image" else str(row[c]) for c in cols]
        )
    body: dict[str, Any] = {"dataframe_split": {"columns": cols, "data": rows}}
    if params:
        body["params"] = params
    return body


def empty_output() -> pd.DataFrame:
    """An output table with no detections (the right columns and dtypes)."""
    frame = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in OUTPUT_COLUMNS})
    return frame


def _dtype(column: str) -> str:
    if column in ("image_index", "label"):
        return "int64"
    if column in ("x1", "y1", "x2", "y2", "score", *POLYGON_COLUMNS, "angle"):
        return "float64"
    return "object"


def signature() -> Any:
    """The MLflow signature: input / output columns above, inference param ``score_thr``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("binary", "image"),
            ColSpec("string", "modality"),
            ColSpec("string", "image_id", required=False),
        ]
    )
    kinds = {"int64": "long", "float64": "double", "object": "string"}
    outputs = Schema([ColSpec(kinds[_dtype(c)], c) for c in OUTPUT_COLUMNS])
    params = ParamSchema([ParamSpec("score_thr", "double", 0.0)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)
