"""The fine-tuned detector as an MLflow pyfunc model (a ``PythonModel`` over :class:`Detector`).

The logged model holds the exported detector (``detector.json`` + ``detector.safetensors``) as the
artifact ``detector``, the evaluation it was registered with as ``eval``, the ``babelrs_core``
package as code, an explicit pip requirement list, the signature of
:mod:`babelrs_core.registry.payload` and an input example. A process that knows only the model URI
loads it with ``mlflow.pyfunc.load_model(uri)``.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from babelrs_core.registry.payload import (
    OUTPUT_COLUMNS,
    PayloadError,
    decode_image,
    empty_output,
    flat_polygon,
    input_frame,
    signature,
)

MODEL_NAME_IN_RUN = "detector"  # the logged model's name inside the run
#: distributions the model code imports at load / predict time (tests/registry/test_requirements.py
#: measures them in a fresh interpreter), pinned to the versions installed when logging
#: (onedl-mmcv has no binary wheel on PyPI: see README "The OpenMMLab stack")
REQUIREMENTS = (
    "mlflow",
    "torch",
    "onedl-mmcv",
    "onedl-mmengine",
    "onedl-mmdetection",
    "onedl-mmrotate",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "safetensors",
    "pydantic",
    "pyyaml",
    "opencv-python-headless",
    "pycocotools",
    "scipy",
    "shapely",
)
DETECTOR_FILES = ("detector.json", "detector.safetensors")


def pip_requirements() -> list[str]:
    """``name==version`` for :data:`REQUIREMENTS` as installed here."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


class DetectorModel(PythonModel):
    """pyfunc wrapper: a table of images (+ modality) in, a table of detections out."""

    def load_context(self, context: Any) -> None:
        from babelrs_core.detector.inference import Detector

        self.detector = Detector.from_checkpoint(context.artifacts["detector"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return predict_frame(self.detector, model_input, (params or {}).get("score_thr"))


def predict_frame(
    detector: Any, model_input: pd.DataFrame, score_thr: float | None = None
) -> pd.DataFrame:
    """Detections for every row of ``model_input`` (one forward pass per modality)."""
    missing = {"image", "modality"} - set(model_input.columns)
    if missing:
        raise PayloadError(f"input table lacks column(s) {sorted(missing)}")
    ids = (
        model_input["image_id"].astype(str).tolist()
        if "image_id" in model_input.columns
        else [str(i) for i in range(len(model_input))]
    )
    groups: dict[str, list[int]] = {}
    images: list[np.ndarray] = []
    pairs = zip(model_input["image"], model_input["modality"], strict=True)
    for i, (data, modality) in enumerate(pairs):
        images.append(decode_image(data, f"row {i} (image_id {ids[i]})"))
        groups.setdefault(detector.dataset_for(str(modality)), []).append(i)
    thr = float(score_thr) if score_thr else None
    rows: list[dict[str, Any]] = []
    per_image: dict[int, list[dict[str, Any]]] = {}
    for dataset, idx in groups.items():
        dets = detector.predict_batch([images[i] for i in idx], dataset, thr)
        per_image.update(zip(idx, dets, strict=True))
    for i in range(len(images)):
        rows += [
            {"image_index": i, "image_id": ids[i], **d, **flat_polygon(d)} for d in per_image[i]
        ]
    if not rows:
        return empty_output()
    return pd.DataFrame(rows)[list(OUTPUT_COLUMNS)]


def input_example(detector_dir: Path) -> pd.DataFrame:
    """A one-row input: a grey 64 x 64 image for the first modality the detector serves."""
    from babelrs_core.detector.checkpoint import read_detector_json

    _, info = read_detector_json(detector_dir)
    modality = next(iter(info["datasets"].values()))["modality"]
    img = np.full((64, 64), 90, np.uint8)
    img[20:36, 24:40] = 240
    return input_frame([img], modality, ["example"])


def log_detector_model(
    detector_dir: str | Path, eval_files: list[Path] | None = None, name: str = MODEL_NAME_IN_RUN
) -> Any:
    """Log the exported detector in ``detector_dir`` as a pyfunc model into the active run, with
    ``eval_files`` (the evaluation it was registered with) as the artifact ``eval``; return
    MLflow's ``ModelInfo``. Only the exported files travel (no training checkpoints)."""
    import babelrs_core

    detector_dir = Path(detector_dir)
    with tempfile.TemporaryDirectory(prefix="babelrs-pyfunc-") as tmp:
        staged = Path(tmp) / "detector"
        staged.mkdir()
        for f in DETECTOR_FILES:
            if not (detector_dir / f).is_file():
                raise FileNotFoundError(f"{detector_dir / f}: missing (run fine-tuning first)")
            shutil.copy2(detector_dir / f, staged / f)
        artifacts = {"detector": str(staged)}
        if eval_files:
            evals = Path(tmp) / "eval"
            evals.mkdir()
            for e in eval_files:
                shutil.copy2(e, evals / Path(e).name)
            artifacts["eval"] = str(evals)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=DetectorModel(),
            artifacts=artifacts,
            code_paths=[str(Path(babelrs_core.__file__).parent)],
            pip_requirements=pip_requirements(),
            signature=signature(),
            input_example=input_example(staged),
        )
