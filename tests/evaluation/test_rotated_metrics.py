"""Rotated AP (mmrotate's DOTA metric, VOC area) on hand-made oriented boxes, and the mixed
summary: SAR horizontal + DOTA / DroneVehicle rotated, horizontal scores beside them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from babelrs_core.detector.rbox import rbox_to_poly
from babelrs_core.evaluation.metrics import (
    ClassScore,
    DatasetScore,
    evaluate_rotated,
    harmonic_mean,
    per_class_rows,
    precision_at_recalls,
    rotated_ap,
    rotated_inputs,
    summarize,
)
from babelrs_core.geometry import poly_from_hbox


def _poly(cx: float, cy: float, w: float, h: float, deg: float) -> list[float]:
    return [float(v) for v in rbox_to_poly([[cx, cy, w, h, math.radians(deg)]])[0]]


def _gt(i: int, objs: list[tuple[list[float], int, bool]]) -> dict:
    return {"id": i, "objects": [{"poly": p, "label": k, "difficult": d} for p, k, d in objs]}


def _det(poly: list[float], score: float, label: int = 0) -> dict:
    return {"polygon": poly, "score": score, "label": label}


def test_rotated_iou_decides_the_thresholds_met() -> None:
    # a 20 x 20 square and the same square turned 45°: the overlap is a regular octagon,
    # 400 * 2 (sqrt 2 - 1) = 331.37, union 468.63: IoU = 1 / sqrt 2 = 0.7071 -> matched at
    # IoU 0.50 .. 0.70 (5 of 10 thresholds): AP50 = 100, mAP = 50
    gt = [_gt(1, [(poly_from_hbox(40, 40, 60, 60), 0, False)])]
    preds = {1: [_det(_poly(50, 50, 20, 20, 45), 0.9)]}
    s = evaluate_rotated("dota", gt, preds, ["a"])
    assert s.box_type == "obox" and s.num_objects == 1 and s.num_detections == 1
    assert s.ap50 == pytest.approx(100.0) and s.map == pytest.approx(50.0)
    # the same box exactly, listed from another vertex: 100 at every threshold
    poly = _poly(50, 50, 40, 20, 30)
    shifted = poly[2:] + poly[:2]
    s = evaluate_rotated("dota", [_gt(1, [(poly, 0, False)])], {1: [_det(shifted, 0.5)]}, ["a"])
    assert s.ap50 == pytest.approx(100.0) and s.map == pytest.approx(100.0)


def test_voc_area_ap_false_positives_and_difficult_objects() -> None:
    a, b = _poly(30, 30, 30, 10, 20), _poly(80, 80, 30, 10, -40)
    hard = _poly(30, 80, 30, 10, 60)
    gt = [_gt(1, [(a, 0, False), (b, 0, False), (hard, 0, True)])]
    far = _poly(150, 150, 30, 10, 0)
    # ranking: TP (a), FP (far), TP (b), detection of the difficult object (ignored)
    preds = {1: [_det(a, 0.9), _det(far, 0.8), _det(b, 0.7), _det(hard, 0.95)]}
    s = evaluate_rotated("dota", gt, preds, ["a"], ignore_difficult=True)
    # precision / recall: (1, .5), (.5, .5), (2/3, 1): VOC area AP = .5 * 1 + .5 * 2/3 = 5/6
    assert s.ap50 == pytest.approx(100 * 5 / 6, abs=1e-3)
    assert s.classes[0].num_gt == 2 and s.num_objects == 2
    # counted as an object, the difficult one makes its detection a TP first: 4 dets, 3 TP
    s2 = evaluate_rotated("dota", gt, preds, ["a"], ignore_difficult=False)
    # (1, 1/3), (1, 2/3), (2/3, 2/3), (3/4, 1): AP = 2/3 * 1 + 1/3 * 3/4 = 11/12
    assert s2.ap50 == pytest.approx(100 * 11 / 12, abs=1e-3)


def test_no_ground_truth_class_is_not_scored_and_no_detections_score_zero() -> None:
    gt = [_gt(1, [(_poly(30, 30, 30, 10, 20), 0, False)])]
    s = evaluate_rotated("dota", gt, {}, ["a", "b"])
    assert [c.num_gt for c in s.classes] == [1, 0]
    assert s.ap50 == 0.0 and s.map == 0.0 and len(s.scored) == 1


@pytest.mark.slow  # mmrotate's function spawns a fresh interpreter per call (~25 s here)
def test_same_numbers_as_mmrotate_eval_rbbox_map() -> None:
    from mmrotate.evaluation.functional import eval_rbbox_map

    rng = np.random.default_rng(1)
    gts, preds = [], {}
    for i in range(1, 6):
        objs, dets = [], []
        for _ in range(4):
            cx, cy, w, h, t = rng.uniform(20, 200), rng.uniform(20, 200), *rng.uniform(8, 40, 2), \
                rng.uniform(-90, 90)  # fmt: skip
            k = int(rng.integers(0, 3))
            objs.append((_poly(cx, cy, w, h, t), k, bool(rng.random() < 0.2)))
            jitter = rng.normal(0, 3, 4)
            dets.append(_det(_poly(cx + jitter[0], cy + jitter[1], w + jitter[2], h,
                                   t + 5 * jitter[3]), float(rng.random()), k))  # fmt: skip
            dets.append(_det(_poly(*rng.uniform(20, 200, 2), 20, 10, 0), float(rng.random()),
                             int(rng.integers(0, 3))))  # fmt: skip
        gts.append(_gt(i, objs))
        preds[i] = dets
    det_results, annotations = rotated_inputs(gts, preds, 3)
    ref_maps = {}
    for thr in (0.5, 0.75):
        ref_maps[thr], ref = eval_rbbox_map(
            det_results, annotations, iou_thr=thr, use_07_metric=False, nproc=1
        )
        ours = rotated_ap(det_results, annotations, thr)
        assert [r["num_gts"] for r in ours] == [r["num_gts"] for r in ref]
        np.testing.assert_allclose([r["ap"] for r in ours], [r["ap"] for r in ref], atol=1e-6)
    s = evaluate_rotated("dota", gts, preds, ["a", "b", "c"], iou_thrs=[0.5, 0.75])
    assert s.ap50 == pytest.approx(100 * ref_maps[0.5], abs=1e-4)
    assert s.map == pytest.approx(50 * (ref_maps[0.5] + ref_maps[0.75]), abs=1e-4)


def test_interpolated_precision_at_recall_points() -> None:
    pr = precision_at_recalls(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert pr[0] == 1.0 and pr[50] == 1.0
    assert pr[51] == pytest.approx(2 / 3) and pr[100] == pytest.approx(2 / 3)
    assert precision_at_recalls(np.array([0.4]), np.array([1.0]))[60] == 0.0


def test_summary_mixes_rotated_and_horizontal_like_the_paper() -> None:
    def ds(name: str, maps: list[float], box: str = "hbox") -> DatasetScore:
        cls = [ClassScore(f"c{i}", 1, m + 10, m) for i, m in enumerate(maps)]
        return DatasetScore(name, cls, 1, len(maps), 1, box_type=box)

    sar = ds("sardet", [60.0, 40.0])
    dota = ds("dota", [30.0], "obox")
    dota.hbox = ds("dota", [50.0])
    dv = ds("dronevehicle", [20.0, 40.0], "obox")
    dv.hbox = ds("dronevehicle", [45.0, 35.0])
    out = summarize([sar, dota, dv])
    assert out["dota"]["map"] == 30.0 and out["dota"]["hbox_map"] == 50.0
    assert out["dronevehicle"]["ap50"] == 40.0 and out["dronevehicle"]["hbox_ap50"] == 50.0
    assert "hbox_map" not in out["sardet"]
    o = out["overall"]
    # H-mAP over SAR horizontal (50) and DOTA / DroneVehicle rotated (30, 30)
    assert o["hmap"] == pytest.approx(harmonic_mean([50.0, 30.0, 30.0]), abs=1e-4)
    assert o["map"] == pytest.approx((60 + 40 + 30 + 20 + 40) / 5)
    # all-horizontal scores beside them
    assert o["hbox_hmap"] == pytest.approx(harmonic_mean([50.0, 50.0, 40.0]), abs=1e-4)
    assert o["hbox_map"] == pytest.approx((60 + 40 + 50 + 45 + 35) / 5)
    rows = per_class_rows([sar, dota])
    assert rows[2] == {"dataset": "dota", "class": "c0", "box": "obox", "num_gt": 1, "ap50": 40.0,
                       "map": 30.0, "hbox_ap50": 60.0, "hbox_map": 50.0}  # fmt: skip
