"""Inference API: one object that takes an image of any of the three sensors and returns boxes.

    det = Detector.from_checkpoint("outputs/finetune")
    det.predict(image, "sar")          # list of dicts: x1 y1 x2 y2 score class_name ...
    det.predict_frame(image, "ir")     # the same as a pandas DataFrame

``image`` is an ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` array on the 0..255 scale (grey SAR / IR
is replicated to three channels, as in training). ``modality`` is ``sar`` / ``rgb`` / ``ir`` or a
dataset name (``sardet`` / ``dota`` / ``dronevehicle``); it picks the head and the normalisation.
Boxes are in the input image's pixel coordinates.

Heads with oriented boxes (``box_type: obox``, DOTA / DroneVehicle by default) also return
``polygon``: the 4 corners ``[x1, y1, x2, y2, x3, y3, x4, y4]`` of the rotated box, clockwise on
screen (DOTA's vertex order, starting at the box's ``(-w/2, -h/2)`` corner) and ``rbox``:
``[cx, cy, w, h, θ]`` (``le90``: ``w >= h``, θ in radians in ``[-π/2, π/2)``, clockwise on
screen). Their ``x1 y1 x2 y2`` is the enclosing horizontal box (clipped to the image, the polygon
is not). Horizontal heads return ``polygon`` and ``rbox`` as ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from babelrs_core.concepts import SOI_DET_CLASSES
from babelrs_core.detections import Detection
from babelrs_core.detector import checkpoint as ckpt

#: What every detection has, whoever returns it (the inference API, the registered model's output).
DETECTION_COLUMNS = ("x1", "y1", "x2", "y2", "score", "label", "class_name", "soi_name")
PRED_COLUMNS = (*DETECTION_COLUMNS, "soi_label", "dataset", "modality", "polygon", "rbox")


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W[, 1|3])`` array -> contiguous ``(H, W, 3)`` uint8 (values clipped to 0..255)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3); got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"image is too small: {arr.shape[1]}x{arr.shape[0]}")
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            raise ValueError("image contains NaN or infinite values")
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def resize_keep_ratio(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize so that the long side is ``size`` (mmdet ``Resize(keep_ratio=True)``'s rule)."""
    import mmcv

    h, w = image.shape[:2]
    out = mmcv.imrescale(image, (size, size), interpolation="bilinear", backend="cv2")
    nh, nw = out.shape[:2]
    return out, (nw / w, nh / h)


class Detector:
    """A fine-tuned multi-sensor detector loaded from an exported checkpoint folder."""

    def __init__(
        self, model: torch.nn.Module, info: ckpt.DetectorInfo, device: str = "cpu"
    ) -> None:
        # an mmdet BaseDetector (untyped): data_preprocessor, predict
        self.model: Any = model.eval()
        self.info = info
        self.device = device
        self.datasets = info["datasets"]
        self.modalities = info["modalities"]

    @classmethod
    def from_checkpoint(cls, source: str | os.PathLike[str], device: str = "cpu") -> Detector:
        """Rebuild the network from ``detector.json`` and load ``detector.safetensors`` strictly."""
        from mmdet.registry import MODELS
        from mmengine.config import ConfigDict

        from babelrs_core.detector.config import register_all

        register_all()
        folder, info = ckpt.read_detector_json(source)
        model = MODELS.build(ConfigDict(info["model"]))
        ckpt.load_weights(model, folder, info, device="cpu")
        model.to(device)
        return cls(model, info, device)

    @property
    def box_types(self) -> dict[str, str]:
        """``hbox`` / ``obox`` per dataset head."""
        return {ds: d.get("box_type", "hbox") for ds, d in self.datasets.items()}

    @property
    def classes(self) -> dict[str, list[str]]:
        """Class names per dataset head."""
        return {ds: list(d["classes"]) for ds, d in self.datasets.items()}

    def dataset_for(self, modality: str) -> str:
        """The head serving ``modality`` (``sar`` / ``rgb`` / ``ir`` or a dataset name)."""
        if modality in self.datasets:
            return modality
        found = [ds for ds, d in self.datasets.items() if d["modality"] == modality]
        if not found:
            known = sorted({d["modality"] for d in self.datasets.values()} | set(self.datasets))
            raise ValueError(f"no head for {modality!r}; known: {', '.join(known)}")
        return found[0]

    def _sample(self, img: np.ndarray, dataset: str, index: int) -> tuple[torch.Tensor, Any]:
        from mmdet.structures import DetDataSample

        modality = self.datasets[dataset]["modality"]
        size = int(self.modalities[modality]["image_size"])
        resized, scale = resize_keep_ratio(img, size)
        sample = DetDataSample(
            metainfo={
                "img_id": index,
                "ori_shape": img.shape[:2],
                "img_shape": resized.shape[:2],
                "scale_factor": scale,
                "dataset": dataset,
                "modality": modality,
            }
        )
        tensor = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
        return tensor, sample

    @torch.no_grad()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        modality: str,
        score_thr: float | None = None,
    ) -> list[list[Detection]]:
        """Detections for each image of one sensor (one forward pass for the whole list)."""
        if not len(images):
            return []
        dataset = self.dataset_for(modality)
        arrays = [as_rgb_uint8(im) for im in images]
        packed = [self._sample(a, dataset, i) for i, a in enumerate(arrays)]
        data = {"inputs": [p[0] for p in packed], "data_samples": [p[1] for p in packed]}
        data = self.model.data_preprocessor(data, False)
        results = self.model.predict(data["inputs"], data["data_samples"], rescale=True)
        return [
            self._records(r.pred_instances, dataset, a.shape[:2], score_thr)
            for r, a in zip(results, arrays, strict=True)
        ]

    def predict(
        self, image: np.ndarray, modality: str, score_thr: float | None = None
    ) -> list[Detection]:
        """Detections of one image: a list of dicts, highest score first."""
        return self.predict_batch([image], modality, score_thr)[0]

    def predict_frame(
        self, image: np.ndarray, modality: str, score_thr: float | None = None
    ) -> pd.DataFrame:
        """:meth:`predict` as a DataFrame with :data:`PRED_COLUMNS`."""
        return pd.DataFrame(self.predict(image, modality, score_thr), columns=list(PRED_COLUMNS))

    def _records(
        self, pred: Any, dataset: str, shape: tuple[int, int], score_thr: float | None
    ) -> list[Detection]:
        from babelrs_core.detector.rbox import rbox_to_poly, regularize
        from babelrs_core.geometry import poly_to_hbox

        d = self.datasets[dataset]
        boxes = pred.bboxes
        if hasattr(boxes, "tensor"):
            boxes = boxes.tensor
        boxes = boxes.detach().float().cpu().numpy()
        rboxes = polys = None
        if boxes.ndim == 2 and boxes.shape[1] == 5:  # oriented head: (cx, cy, w, h, θ) le90
            rboxes = regularize(boxes)
            polys = rbox_to_poly(rboxes)
            boxes = poly_to_hbox(polys)
        boxes = boxes.reshape(-1, 4).copy()
        h, w = shape
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        scores = pred.scores.detach().float().cpu().numpy()
        labels = pred.labels.detach().cpu().numpy().astype(int)
        order = np.argsort(-scores, kind="stable")
        out: list[Detection] = []
        for i in order:
            if score_thr is not None and scores[i] < score_thr:
                continue
            soi = d["soi_names"][labels[i]]
            out.append(
                {
                    "x1": float(boxes[i, 0]),
                    "y1": float(boxes[i, 1]),
                    "x2": float(boxes[i, 2]),
                    "y2": float(boxes[i, 3]),
                    "score": float(scores[i]),
                    "label": int(labels[i]),
                    "class_name": d["classes"][labels[i]],
                    "soi_name": soi,
                    "soi_label": SOI_DET_CLASSES.index(soi),
                    "dataset": dataset,
                    "modality": d["modality"],
                    "polygon": None if polys is None else [float(v) for v in polys[i]],
                    "rbox": None if rboxes is None else [float(v) for v in rboxes[i]],
                }
            )
        return out


def load_detector(source: str | os.PathLike[str] | None = None, device: str = "cpu") -> Detector:
    """:meth:`Detector.from_checkpoint` with ``outputs/finetune`` as the default folder."""
    return Detector.from_checkpoint(Path(source or "outputs/finetune"), device)
