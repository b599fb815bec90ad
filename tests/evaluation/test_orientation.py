"""Orientation diagnostics on hand-made boxes: axis errors, aspect ratios, matching rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from babelrs_core.detector.rbox import rbox_to_poly
from babelrs_core.evaluation.orientation import (
    aspect,
    axis_error_deg,
    long_axis_deg,
    match_objects,
    orientation_line,
    plot_orientation,
    summarize_orientation,
)
from babelrs_core.geometry import poly_to_hbox
from tests.images import assert_png


def _poly(cx: float, cy: float, w: float, h: float, deg: float) -> list[float]:
    return [float(v) for v in rbox_to_poly(np.array([[cx, cy, w, h, math.radians(deg)]]))[0]]


def _obj(poly: list[float], label: int = 0, difficult: bool = False) -> dict:
    return {"bbox": [float(v) for v in poly_to_hbox([poly])[0]], "label": label,
            "difficult": difficult, "poly": poly}  # fmt: skip


def _det(poly: list[float], label: int = 0, score: float = 0.9) -> dict:
    x1, y1, x2, y2 = (float(v) for v in poly_to_hbox([poly])[0])
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "label": label, "score": score,
            "polygon": poly, "rbox": None}  # fmt: skip


def test_axis_angles_are_undirected_lines() -> None:
    assert axis_error_deg(np.array([0.0]), np.array([179.0]))[0] == pytest.approx(1.0)
    assert axis_error_deg(np.array([10.0]), np.array([100.0]))[0] == pytest.approx(90.0)
    assert axis_error_deg(np.array([170.0]), np.array([20.0]))[0] == pytest.approx(30.0)
    # le90 boxes with w < h: the long axis is the h side, 90 degrees further
    rb = np.array([[0, 0, 10, 40, math.radians(20)], [0, 0, 40, 10, math.radians(-30)]])
    assert long_axis_deg(rb) == pytest.approx([110.0, 150.0])
    assert aspect(rb) == pytest.approx([4.0, 4.0])


def test_matching_records_angle_shape_and_rotated_iou() -> None:
    gt = _poly(100, 100, 60, 15, 30)  # elongated, axis at 30 degrees
    square = _poly(50, 50, 20, 19, 10)  # aspect < 1.5: no axis, skipped
    hidden = _poly(150, 40, 40, 10, 0)  # difficult: ignored
    images = [{"id": 1, "file": "a", "objects": [_obj(gt), _obj(square), _obj(hidden, 0, True)]}]
    x1, y1, x2, y2 = poly_to_hbox([gt])[0]
    upright = [x1, y1, x2, y1, x2, y2, x1, y2]  # the enclosing box, axis-aligned
    preds = {1: [_det(upright, score=0.8), _det(gt, score=0.5), _det(gt, label=1, score=0.99)]}
    (rec,) = match_objects(images, preds, ["car", "bus"])
    # the best-scoring same-class detection with hbox IoU >= 0.5 is the upright one
    assert rec["found"] and rec["class"] == "car" and rec["score"] == pytest.approx(0.8)
    assert rec["gt_axis_deg"] == pytest.approx(30.0, abs=0.5)
    assert rec["axis_error_deg"] == pytest.approx(30.0, abs=0.5)
    assert rec["gt_aspect"] == pytest.approx(4.0, rel=1e-3)
    assert rec["pred_aspect"] < 2.0 and rec["rotated_iou"] < 0.5
    # the exact box: no error, IoU 1
    (exact,) = match_objects(images, {1: [_det(gt)]}, ["car", "bus"])
    assert exact["axis_error_deg"] == pytest.approx(0.0, abs=0.5)
    assert exact["rotated_iou"] == pytest.approx(1.0, abs=1e-3)
    # only another class's detection, or none at all: not found
    (other,) = match_objects(images, {1: [_det(gt, label=1)]}, ["car", "bus"])
    assert not other["found"] and "axis_error_deg" not in other
    assert not match_objects(images, {}, ["car", "bus"])[0]["found"]
    # difficult objects count when they are not ignored
    assert len(match_objects(images, {}, ["car", "bus"], ignore_difficult=False)) == 2


def test_summary_line_and_plot(tmp_path: Path) -> None:
    gt = _poly(100, 100, 60, 15, 30)
    images = [{"id": 1, "file": "a", "objects": [_obj(gt)]},
              {"id": 2, "file": "b", "objects": [_obj(_poly(60, 60, 30, 10, 80))]}]  # fmt: skip
    records = match_objects(images, {1: [_det(gt)]}, ["car"])
    s = summarize_orientation(records)
    assert s["elongated_objects"] == 2 and s["found_horizontally"] == 1
    assert s["share_within_10_deg"] == 1.0 and s["share_rotated_iou_50"] == 1.0
    assert s["median_gt_aspect"] == pytest.approx(3.5, rel=1e-3)  # median of 4 and 3
    line = orientation_line("dronevehicle", s)
    assert line.startswith("dronevehicle orientation: 1 of 2 elongated objects found")
    none = summarize_orientation(match_objects(images, {}, ["car"]))
    assert none["median_axis_error_deg"] is None
    assert "0 of 2" in orientation_line("dota", none)
    png = plot_orientation({"dronevehicle": records, "dota": []}, tmp_path / "o.png")
    assert_png(png, min_size=(200, 150), min_colours=10)
