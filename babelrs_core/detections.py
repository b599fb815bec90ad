"""The records that pass between the detector and its scorers: one detection of the inference
API (:meth:`babelrs_core.detector.inference.Detector.predict`), and the ground truth of one
evaluation image (:func:`babelrs_core.evaluation.metrics.gt_image`). Plain ``TypedDict`` s, so
they stay JSON-able (the serving payload, ``predictions/<dataset>.json``) and tests may write them
as dict literals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict


class Detection(TypedDict):
    """One detection, in pixels of the image given to the detector, highest score first."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int  # index into the dataset's own classes
    class_name: NotRequired[str]
    soi_name: NotRequired[str]  # the SOI-Det concept of the class
    soi_label: NotRequired[int]
    dataset: NotRequired[str]
    modality: NotRequired[str]
    polygon: NotRequired[list[float] | None]  # oriented heads: 8 values (4 corners)
    rbox: NotRequired[list[float] | None]  # oriented heads: (cx, cy, w, h, angle) le90


class GtObject(TypedDict):
    """One ground-truth object of an evaluation image."""

    bbox: Sequence[float]  # x1, y1, x2, y2
    label: int
    difficult: bool  # DOTA's flag: ignored by the metrics when ``ignore_difficult``
    poly: NotRequired[Sequence[float] | None]  # oriented datasets: 8 values


class GtImage(TypedDict):
    """The ground truth of one evaluation image, under its evaluation id."""

    id: int
    width: int
    height: int
    objects: list[GtObject]
    file: NotRequired[str]
