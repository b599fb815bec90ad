"""SOI-Det metric aggregation against hand-computed values, the paper's row included."""

from __future__ import annotations

import pytest

from babelrs_core.evaluation.metrics import (
    class_weighted_mean,
    coco_detections,
    coco_ground_truth,
    evaluate_coco,
    harmonic_mean,
    per_class_rows,
    summarize,
)

PAPER_MAP = {"sardet": 63.30, "dota": 46.96, "dronevehicle": 51.32}
PAPER_AP50 = {"sardet": 91.70, "dota": 77.73, "dronevehicle": 79.63}
SOI_DET_CLASSES = {"sardet": 6, "dota": 15, "dronevehicle": 5}


def test_paper_h_map_is_the_harmonic_mean_of_dataset_maps() -> None:
    assert round(harmonic_mean(list(PAPER_MAP.values())), 2) == 53.02
    # by hand: 3 / (1/63.30 + 1/46.96 + 1/51.32)
    assert harmonic_mean([63.30, 46.96, 51.32]) == pytest.approx(
        3 / (1 / 63.30 + 1 / 46.96 + 1 / 51.32)
    )


def test_paper_overall_is_class_count_weighted() -> None:
    assert round(class_weighted_mean(PAPER_MAP, SOI_DET_CLASSES), 2) == 51.57
    assert round(class_weighted_mean(PAPER_AP50, SOI_DET_CLASSES), 2) == 81.32
    # not the plain mean of the three dataset scores
    assert round(sum(PAPER_MAP.values()) / 3, 2) != 51.57


def test_harmonic_mean_edge_cases() -> None:
    assert harmonic_mean([10.0, 0.0, 30.0]) == 0.0
    assert harmonic_mean([20.0, 20.0]) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        harmonic_mean([])
    with pytest.raises(ValueError):
        harmonic_mean([1.0, -1.0])
    with pytest.raises(ValueError):
        class_weighted_mean({"a": 1.0}, {"b": 2})


def _img(i: int, objs: list[tuple]) -> dict:
    return {
        "id": i,
        "width": 100,
        "height": 100,
        "objects": [
            {"bbox": list(b), "label": lab, "difficult": bool(diff)} for b, lab, diff in objs
        ],
    }


def _det(x1: float, y1: float, x2: float, y2: float, score: float, label: int = 0) -> dict:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "score": score, "label": label}


def test_one_hit_one_false_positive_one_miss() -> None:
    # two ground truths; detections by score: hit (P=1, R=.5), false positive (P=.5, R=.5).
    # COCO's 101-point precision envelope is 1 for recall 0.00..0.50 (51 points), 0 after:
    # AP = 51 / 101 at every IoU threshold.
    gt = coco_ground_truth(
        [_img(1, [((10, 10, 30, 30), 0, False)]), _img(2, [((50, 50, 80, 80), 0, False)])],
        ["thing"],
    )
    dets = coco_detections({1: [_det(10, 10, 30, 30, 0.9), _det(60, 0, 90, 20, 0.8)]})
    s = evaluate_coco("toy", gt, dets)
    assert s.classes[0].num_gt == 2
    assert s.ap50 == pytest.approx(100 * 51 / 101)
    assert s.map == pytest.approx(100 * 51 / 101)
    assert s.pr_mean()[50] == pytest.approx(1.0) and s.pr_mean()[51] == 0.0


def test_iou_threshold_sweep_gives_map() -> None:
    # one box overlapping its ground truth with IoU 0.62: a hit at IoU 0.50, 0.55, 0.60 only,
    # so AP@50 = 100 and mAP = 3 / 10 x 100.
    gt = coco_ground_truth([_img(1, [((0, 0, 50, 100), 0, False)])], ["thing"])
    w = 0.62 * 50  # same height, shifted width overlap: IoU = w / 50 when the box is (0,0,w,100)
    dets = coco_detections({1: [_det(0, 0, w, 100, 0.7)]})
    s = evaluate_coco("toy", gt, dets)
    assert s.ap50 == pytest.approx(100.0)
    assert s.map == pytest.approx(30.0)


def test_difficult_objects_are_ignored() -> None:
    gt = coco_ground_truth(
        [_img(1, [((10, 10, 30, 30), 0, False), ((60, 60, 70, 70), 0, True)])], ["thing"]
    )
    dets = coco_detections({1: [_det(60, 60, 70, 70, 0.95), _det(10, 10, 30, 30, 0.9)]})
    s = evaluate_coco("toy", gt, dets)
    assert s.classes[0].num_gt == 1
    assert s.ap50 == pytest.approx(100.0)  # the detection on the difficult box is not a FP
    counted = coco_ground_truth(
        [_img(1, [((10, 10, 30, 30), 0, False), ((60, 60, 70, 70), 0, True)])],
        ["thing"],
        ignore_difficult=False,
    )
    assert evaluate_coco("toy", counted, dets).classes[0].num_gt == 2


def test_dataset_means_skip_classes_without_ground_truth_and_overall_spans_all_classes() -> None:
    # dataset A: 1 class, AP 100; dataset B: classes x (AP 100), y (AP 0), z (no GT).
    gt_a = coco_ground_truth([_img(1, [((0, 0, 10, 10), 0, False)])], ["a0"])
    s_a = evaluate_coco("A", gt_a, coco_detections({1: [_det(0, 0, 10, 10, 0.9)]}))
    gt_b = coco_ground_truth(
        [_img(1, [((0, 0, 10, 10), 0, False), ((50, 50, 60, 60), 1, False)])], ["x", "y", "z"]
    )
    s_b = evaluate_coco("B", gt_b, coco_detections({1: [_det(0, 0, 10, 10, 0.9)]}))
    assert [c.num_gt for c in s_b.classes] == [1, 1, 0]
    assert s_b.map == pytest.approx(50.0)
    out = summarize([s_a, s_b])
    assert out["A"]["map"] == pytest.approx(100.0) and out["B"]["map"] == pytest.approx(50.0)
    # overall = mean over the 3 scored classes (100, 100, 0), not (100 + 50) / 2
    assert out["overall"]["map"] == pytest.approx(200 / 3, abs=1e-3)
    assert out["overall"]["classes_scored"] == 3
    assert out["overall"]["hmap"] == pytest.approx(harmonic_mean([100.0, 50.0]), abs=1e-3)
    rows = per_class_rows([s_a, s_b])
    assert rows[-1] == {"dataset": "B", "class": "z", "box": "hbox", "num_gt": 0, "ap50": None,
                        "map": None, "hbox_ap50": None, "hbox_map": None}  # fmt: skip


def test_no_detections_score_zero() -> None:
    gt = coco_ground_truth([_img(1, [((0, 0, 10, 10), 0, False)])], ["a0"])
    s = evaluate_coco("A", gt, [])
    assert s.ap50 == 0.0 and s.map == 0.0 and s.num_detections == 0
    assert summarize([s])["overall"]["hmap"] == 0.0
