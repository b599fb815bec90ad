"""The paired bootstrap over evaluation images: a hand-computed distribution, the fast scoring
against the metrics themselves (identity and random resamples, horizontal and rotated), and the
intervals of identical and clearly different detectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from babelrs_core.detector.rbox import rbox_to_poly
from babelrs_core.evaluation.bootstrap import (
    RunScores,
    coco_table,
    distribution,
    paired_difference,
    percentile_interval,
    resample_indices,
    rotated_table,
    run_scores,
    score_table,
    score_tables,
)
from babelrs_core.evaluation.metrics import coco_detections, evaluate_coco, evaluate_rotated
from babelrs_core.evaluation.metrics import coco_ground_truth as _gt_dict


def _img(i: int, objs: list[tuple[list[float], int, bool]]) -> dict:
    return {"id": i, "width": 200, "height": 200,
            "objects": [{"bbox": b, "label": k, "difficult": d} for b, k, d in objs]}  # fmt: skip


def _det(b: list[float], score: float, label: int = 0) -> dict:
    return {"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "score": score, "label": label}


def _coco_reference(gt: list[dict], preds: dict, idx: np.ndarray, names: list[str]):
    """The metric itself on the resampled image set (fresh ids 1..n in resample order)."""
    imgs, res = [], {}
    for j, i in enumerate(idx):
        imgs.append({**gt[i], "id": j + 1})
        res[j + 1] = preds.get(gt[i]["id"], [])
    return evaluate_coco("sardet", _gt_dict(imgs, names), coco_detections(res))


# -- by hand ------------------------------------------------------------------------------------

A, B = [10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 140.0, 140.0]
FAR = [150.0, 20.0, 190.0, 60.0]


def test_hand_computed_bootstrap_distribution() -> None:
    # two images with one object each. Detector "good" finds both exactly; "bad" finds the object
    # of image 0 (score 0.9) and puts a false positive in image 1 (score 0.8). IoU is 1 or 0, so
    # AP is the same at every threshold (AP50 = mAP). On a resample with both images (any order,
    # either count 1 + 1): 2 objects, ranking TP, FP -> precision 1 up to recall 0.5, nothing
    # beyond: the 51 recall points 0.00 .. 0.50 of 101 have precision 1, AP = 100 * 51 / 101.
    # Image 0 twice: AP 100; image 1 twice: AP 0. "good" is 100 on every resample.
    gt = [_img(1, [(A, 0, False)]), _img(2, [(B, 0, False)])]
    good = {1: [_det(A, 0.9)], 2: [_det(B, 0.8)]}
    bad = {1: [_det(A, 0.9)], 2: [_det(FAR, 0.8)]}
    assert _coco_reference(gt, bad, np.array([0, 1]), ["ship"]).map == pytest.approx(5100 / 101)
    names = ["ship"]
    tg = coco_table("sardet", gt, coco_detections(good), names)
    tb = coco_table("sardet", gt, coco_detections(bad), names)
    idx = resample_indices({"sardet": 2}, 12, seed=3)
    by_hand = []
    for row in idx["sardet"]:
        n0 = int(np.sum(row == 0))
        by_hand.append(100.0 if n0 == 2 else 0.0 if n0 == 0 else 5100 / 101)
    got = distribution([tb], idx)
    assert got["sardet.map"] == pytest.approx(by_hand, abs=1e-12)
    assert got["overall.hmap"] == pytest.approx(by_hand, abs=1e-12)
    full = RunScores(score_tables([tg]), distribution([tg], idx))
    part = RunScores(score_tables([tb]), got)
    assert part.full["sardet.map"] == pytest.approx(5100 / 101)
    iv = paired_difference({0: full}, {0: part}, ["sardet.map"])["sardet.map"]
    deltas = 100.0 - np.array(by_hand)
    assert iv.delta == pytest.approx(100 - 5100 / 101)
    assert (iv.low, iv.high) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))
    # the drawn resamples include all three kinds, so the interval spans 0 .. 100
    assert {0, 1, 2} <= {int(np.sum(r == 0)) for r in idx["sardet"]}
    assert (iv.low, iv.high) == pytest.approx((0.0, 100.0))
    assert iv.verdict == "not shown" and iv.samples == 12


def test_percentile_interval_and_verdicts() -> None:
    iv = percentile_interval(np.arange(101, dtype=float), 50.0)
    assert (iv.low, iv.high) == pytest.approx((2.5, 97.5)) and iv.verdict == "shown"
    assert percentile_interval(-np.arange(1.0, 102.0), -50.0).verdict == "reversed"
    assert percentile_interval(np.array([-1.0, 1.0]), 0.0).verdict == "not shown"


# -- the fast scoring is the metric -------------------------------------------------------------


def _random_hbox(rng: np.random.Generator, n_img: int, n_cls: int, tie: bool = False):
    gt, preds = [], {}
    for i in range(1, n_img + 1):
        objs, dets = [], []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(8, 40, 2)
            b = [float(x), float(y), float(x + w), float(y + h)]
            k = int(rng.integers(0, n_cls))
            objs.append((b, k, bool(rng.random() < 0.15)))
            if rng.random() < 0.8:  # a detection near it
                j = rng.normal(0, 4, 4)
                dets.append(_det([float(v) for v in np.array(b) + j], float(rng.random()), k))
        for _ in range(int(rng.integers(0, 4))):  # false positives
            x, y = rng.uniform(0, 150, 2)
            sc = 0.5 if tie else float(rng.random())
            dets.append(_det([float(x), float(y), float(x + 20), float(y + 20)], sc,
                             int(rng.integers(0, n_cls))))  # fmt: skip
        if tie:
            for d in dets[::2]:
                d["score"] = 0.5
        gt.append(_img(i, objs))
        preds[i] = dets
    return gt, preds


@pytest.mark.parametrize("tie", [False, True])
def test_coco_identity_and_resamples_equal_the_metric(tie: bool) -> None:
    rng = np.random.default_rng(7)
    names = ["a", "b", "c"]
    gt, preds = _random_hbox(rng, 12, 3, tie)
    table = coco_table("sardet", gt, coco_detections(preds), names)
    ref = evaluate_coco("sardet", _gt_dict(gt, names), coco_detections(preds))
    got = score_table(table)
    assert [(c.num_gt, c.ap50, c.ap) for c in got.classes] == [
        (c.num_gt, c.ap50, c.ap) for c in ref.classes
    ]  # exactly
    assert got.map == ref.map and got.ap50 == ref.ap50
    for row in resample_indices({"sardet": 12}, 15, seed=1)["sardet"]:
        ref = _coco_reference(gt, preds, row, names)
        got = score_table(table, row)
        assert [(c.num_gt, c.ap50, c.ap) for c in got.scored] == [
            (c.num_gt, c.ap50, c.ap) for c in ref.scored
        ]
        assert got.map == ref.map


def _poly(cx: float, cy: float, w: float, h: float, deg: float) -> list[float]:
    return [float(v) for v in rbox_to_poly([[cx, cy, w, h, math.radians(deg)]])[0]]


def _random_obox(rng: np.random.Generator, n_img: int, n_cls: int):
    gt, preds = [], {}
    for i in range(1, n_img + 1):
        objs, dets = [], []
        for _ in range(int(rng.integers(0, 4))):
            cx, cy = rng.uniform(30, 170, 2)
            w, h, a = (
                float(rng.uniform(10, 40)),
                float(rng.uniform(6, 20)),
                float(rng.uniform(-80, 80)),
            )
            k = int(rng.integers(0, n_cls))
            objs.append({"poly": _poly(cx, cy, w, h, a), "label": k,
                         "difficult": bool(rng.random() < 0.15)})  # fmt: skip
            if rng.random() < 0.8:
                dets.append({"polygon": _poly(cx + rng.normal(0, 2), cy + rng.normal(0, 2), w, h,
                                              a + rng.normal(0, 8)),
                             "score": float(np.float32(rng.random())), "label": k})  # fmt: skip
        for _ in range(int(rng.integers(0, 3))):
            cx, cy = rng.uniform(30, 170, 2)
            dets.append({"polygon": _poly(cx, cy, 20, 10, 0), "score": 0.5,
                         "label": int(rng.integers(0, n_cls))})  # fmt: skip
        gt.append({"id": i, "objects": objs})
        preds[i] = dets
    return gt, preds


def test_rotated_identity_and_resamples_equal_the_metric() -> None:
    rng = np.random.default_rng(11)
    names = ["a", "b"]
    gt, preds = _random_obox(rng, 10, 2)
    table = rotated_table("dota", gt, preds, names)
    ref = evaluate_rotated("dota", gt, preds, names)
    got = score_table(table)
    assert [(c.num_gt, c.ap50, c.ap) for c in got.classes] == [
        (c.num_gt, c.ap50, c.ap) for c in ref.classes
    ]
    assert got.map == ref.map
    for row in resample_indices({"dota": 10}, 10, seed=2)["dota"]:
        imgs = [{**gt[i], "id": j + 1} for j, i in enumerate(row)]
        res = {j + 1: preds[gt[i]["id"]] for j, i in enumerate(row)}
        ref = evaluate_rotated("dota", imgs, res, names)
        got = score_table(table, row)
        assert [(c.num_gt, c.ap50, c.ap) for c in got.scored] == [
            (c.num_gt, c.ap50, c.ap) for c in ref.scored
        ]


# -- intervals --------------------------------------------------------------------------------


def _two_datasets(rng: np.random.Generator, degrade: float):
    """SAR (hbox) and DOTA (obox) tables of a detector; ``degrade``: share of detections lost."""
    hgt, hpred = _random_hbox(rng, 24, 2)
    ogt, opred = _random_obox(rng, 12, 2)
    keep = np.random.default_rng(99)
    if degrade:
        hpred = {i: [d for d in ds if keep.random() >= degrade] for i, ds in hpred.items()}
        opred = {i: [d for d in ds if keep.random() >= degrade] for i, ds in opred.items()}
    return [coco_table("sardet", hgt, coco_detections(hpred), ["a", "b"]),
            rotated_table("dota", ogt, opred, ["a", "b"])]  # fmt: skip


def test_identical_detectors_give_exactly_zero_and_a_better_one_a_positive_interval() -> None:
    full = _two_datasets(np.random.default_rng(5), 0.0)  # the same images, all detections
    worse = _two_datasets(np.random.default_rng(5), 0.85)
    idx = resample_indices({"sardet": 24, "dota": 12}, 200, seed=0)
    a = {0: run_scores(full, idx), 1: run_scores(full, idx)}
    same = paired_difference(a, {0: run_scores(full, idx)})
    for key, iv in same.items():
        assert (iv.delta, iv.low, iv.high) == (0.0, 0.0, 0.0), key
        assert iv.verdict == "not shown" and iv.seeds == (0,)
    better = paired_difference(a, {0: run_scores(worse, idx), 7: run_scores(worse, idx)})
    iv = better["overall.hmap"]
    assert iv.delta > 0 and iv.low > 0 and iv.verdict == "shown" and iv.samples == 200
    assert iv.low <= iv.delta <= iv.high
    assert better["overall.map"].verdict == "shown"
    reverse = paired_difference({0: run_scores(worse, idx)}, a)["overall.hmap"]
    assert reverse.verdict == "reversed" and reverse.delta == pytest.approx(-iv.delta)


def test_seeds_are_averaged_within_each_resample() -> None:
    d = {"x": np.array([1.0, 2.0, 3.0])}
    a = {0: RunScores({"x": 1.0}, d), 1: RunScores({"x": 3.0}, {"x": d["x"] + 2})}
    b = {0: RunScores({"x": 0.0}, {"x": np.zeros(3)}), 2: RunScores({"x": 9.0}, {"x": d["x"]})}
    iv = paired_difference(a, b)["x"]  # only seed 0 is shared
    assert iv.delta == 1.0 and iv.seeds == (0,)
    b[1] = RunScores({"x": 1.0}, {"x": np.ones(3)})
    iv = paired_difference(a, b)["x"]  # seeds 0, 1: a = 2 + [1, 2, 3] - 1, b = 0.5
    assert iv.delta == 1.5 and iv.seeds == (0, 1)
    assert (iv.low, iv.high) == pytest.approx(tuple(np.percentile([1.5, 2.5, 3.5], [2.5, 97.5])))
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({3: a[0]}, {4: b[0]})
