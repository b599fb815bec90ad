"""SOI-Det metrics (docs/method.md §4.2): per-dataset AP@50 and mAP(.5:.95), the overall score as
the mean over the union of classes, and H-mAP.

* Horizontal-box datasets (SAR): COCO AP through pycocotools (:func:`evaluate_coco`).
* Oriented-box datasets (DOTA, DroneVehicle, ``box_type: obox``): mmrotate's DOTA metric
  (:func:`evaluate_rotated`): rotated IoU, VOC area AP (all-point interpolation), at each IoU of
  0.50:0.05:0.95, with mmrotate's own per-image matching (``tpfp_default``) and mmdet's
  ``average_precision``; their horizontal COCO scores (enclosing boxes) are kept beside them
  (:attr:`DatasetScore.hbox`). The paper scores the oriented datasets this way and mixes both kinds
  in its overall and H-mAP; ``summarize`` does the same and also reports all-horizontal scores.

* Per class ``c``: ``AP50_c`` (IoU 0.5) and ``AP_c`` (mean over IoU 0.50:0.05:0.95), COCO's
  101-point interpolated precision, ``maxDets`` detections per image, all areas.
* Per dataset ``m``: the mean over its classes that have ground truth in the evaluated split.
* Overall: the mean over *all* those classes of all datasets, i.e. the dataset scores weighted by
  their class counts (6 : 15 : 5 on SOI-Det) -- :func:`class_weighted_mean`.
* H-mAP: the harmonic mean of the per-dataset mAPs -- :func:`harmonic_mean`
  (paper: 3 / (1/63.30 + 1/46.96 + 1/51.32) = 53.02).

All scores are percentages (0..100), as in the paper's tables. DOTA ``difficult`` objects can be
ignored (``iscrowd``: neither counted as misses nor as false positives when matched).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import numpy as np

from babelrs_core.detections import Detection, GtImage, GtObject

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (the weakest link drives H-mAP)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("harmonic mean of no values")
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic mean needs non-negative values, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def class_weighted_mean(scores: Mapping[str, float], class_counts: Mapping[str, int]) -> float:
    """Mean over the union of classes, from per-dataset means and their class counts."""
    if set(scores) != set(class_counts):
        raise ValueError(f"scores {sorted(scores)} and class counts {sorted(class_counts)} differ")
    total = sum(class_counts[k] for k in scores)
    if total <= 0:
        raise ValueError("no classes")
    return sum(scores[k] * class_counts[k] for k in scores) / total


@dataclass
class ClassScore:
    """One class of one dataset."""

    name: str
    num_gt: int
    ap50: float  # percent
    ap: float  # percent, mean over IoU 0.50:0.95
    pr50: list[float] = field(default_factory=list)  # precision at RECALL_POINTS, IoU 0.5


@dataclass
class DatasetScore:
    """One dataset's COCO evaluation."""

    name: str
    classes: list[ClassScore]
    num_images: int
    num_objects: int
    num_detections: int
    box_type: str = "hbox"  # how the main scores were computed: hbox (COCO) | obox (rotated VOC)
    hbox: DatasetScore | None = None  # obox datasets: their horizontal COCO scores

    @property
    def scored(self) -> list[ClassScore]:
        """Classes with ground truth (the ones that enter the means)."""
        return [c for c in self.classes if c.num_gt > 0]

    @property
    def ap50(self) -> float:
        s = self.scored
        return float(np.mean([c.ap50 for c in s])) if s else 0.0

    @property
    def map(self) -> float:
        s = self.scored
        return float(np.mean([c.ap for c in s])) if s else 0.0

    def pr_mean(self) -> list[float]:
        """Class-mean precision at IoU 0.5 over RECALL_POINTS."""
        s = [c.pr50 for c in self.scored if c.pr50]
        return np.mean(np.array(s), axis=0).tolist() if s else [0.0] * len(RECALL_POINTS)


def coco_ground_truth(
    images: Sequence[GtImage], class_names: Sequence[str], ignore_difficult: bool = True
) -> dict[str, Any]:
    """A COCO ``instances`` dict. ``images``: ``{"id", "width", "height", "objects": [{"bbox":
    [x1, y1, x2, y2], "label": int, "difficult": bool}]}``; category ids are ``label + 1``."""
    out_images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for img in images:
        out_images.append({"id": img["id"], "width": img["width"], "height": img["height"]})
        for obj in img["objects"]:
            x1, y1, x2, y2 = (float(v) for v in obj["bbox"])
            w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
            crowd = int(bool(obj.get("difficult")) and ignore_difficult)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": int(obj["label"]) + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    return {"images": out_images, "annotations": anns, "categories": cats}


def coco_detections(preds: Mapping[int, Sequence[Detection]]) -> list[dict[str, Any]]:
    """COCO results from ``{image id: [{"x1".."y2", "score", "label"}]}``; oriented detections
    keep their ``polygon`` and ``rbox`` (ignored by the COCO evaluation)."""
    out = []
    for image_id, dets in preds.items():
        for d in dets:
            w, h = d["x2"] - d["x1"], d["y2"] - d["y1"]
            rec: dict[str, Any] = {
                "image_id": image_id,
                "category_id": int(d["label"]) + 1,
                "bbox": [float(d["x1"]), float(d["y1"]), float(w), float(h)],
                "score": float(d["score"]),
            }
            polygon, rbox = d.get("polygon"), d.get("rbox")
            if polygon is not None:
                rec["polygon"] = [float(v) for v in polygon]
            if rbox is not None:
                rec["rbox"] = [float(v) for v in rbox]
            out.append(rec)
    return out


def gt_image(item: dict[str, Any], image_id: int, oriented: bool) -> GtImage:
    """The ground-truth record the metrics read of a detector data item
    (:func:`babelrs_core.detector.data.image_items`): its objects (box, label, DOTA difficult
    flag, polygon for oriented heads) and size, under ``image_id``."""
    objs: list[GtObject] = [
        {
            "bbox": i["bbox"],
            "label": i["bbox_label"],
            "difficult": bool(i["ignore_flag"]),
            "poly": i["poly"] if oriented else None,
        }
        for i in item["instances"]
    ]
    return {
        "id": image_id,
        "width": item["width"],
        "height": item["height"],
        "objects": objs,
        "file": item["img_id"],
    }


def coco_matches(gt: dict[str, Any], dets: Sequence[dict[str, Any]], max_dets: int) -> Any:
    """pycocotools' per-image matching (``COCOeval.evaluate``) of ``dets`` against the COCO
    ground truth ``gt`` at :data:`IOU_THRESHOLDS` / :data:`RECALL_POINTS`, quietly."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {k: list(v) for k, v in gt.items()}
        coco.createIndex()
        keep = ("image_id", "category_id", "bbox", "score")
        res = coco.loadRes([{k: d[k] for k in keep} for d in dets])
        ev = COCOeval(coco, res, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.params.iouThrs = IOU_THRESHOLDS
        ev.params.recThrs = RECALL_POINTS
        ev.evaluate()
    return ev


def evaluate_coco(
    name: str,
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    max_dets: int = 100,
) -> DatasetScore:
    """Per-class AP@50 / AP(.5:.95) of one dataset with pycocotools (output silenced)."""
    cats = gt["categories"]
    counts = {c["id"]: 0 for c in cats}
    for a in gt["annotations"]:
        if not a["iscrowd"]:
            counts[a["category_id"]] += 1
    n_obj = sum(counts.values())
    zero = [
        ClassScore(c["name"], counts[c["id"]], 0.0, 0.0, [0.0] * len(RECALL_POINTS)) for c in cats
    ]
    if not dets or not gt["images"]:
        return DatasetScore(name, zero, len(gt["images"]), n_obj, len(dets))
    ev = coco_matches(gt, dets, max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    classes = []
    for k, cat_id in enumerate(ev.params.catIds):
        cat = next(c for c in cats if c["id"] == cat_id)
        if counts[cat_id] == 0:
            classes.append(ClassScore(cat["name"], 0, 0.0, 0.0, []))
            continue
        classes.append(coco_class_score(cat["name"], counts[cat_id], precision[:, :, k, 0, -1]))
    return DatasetScore(name, classes, len(gt["images"]), n_obj, len(dets))


def coco_class_score(name: str, num_gt: int, precision: np.ndarray) -> ClassScore:
    """One class's scores from COCO's interpolated precision ``[T, R]`` (IoU threshold x
    recall point; -1 where undefined): AP per threshold = mean over the recall points."""
    per_t = [float(np.mean(np.clip(precision[t], 0, None))) for t in range(precision.shape[0])]
    pr50 = np.clip(precision[0], 0, None).tolist()
    return ClassScore(name, num_gt, 100 * per_t[0], 100 * float(np.mean(per_t)), pr50)


def precision_at_recalls(recall: np.ndarray, precision: np.ndarray) -> list[float]:
    """Interpolated precision (max precision at recall >= r) at :data:`RECALL_POINTS`."""
    recall, precision = np.asarray(recall, float).ravel(), np.asarray(precision, float).ravel()
    if not len(recall):
        return [0.0] * len(RECALL_POINTS)
    env = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return [float(env[i]) if i < len(env) else 0.0 for i in idx]


def detection_rboxes(dets: Sequence[Detection]) -> np.ndarray:
    """``(N, 5)`` rotated boxes of inference-API detections: the head's own ``rbox`` when every
    detection has one, else the ``polygon`` converted to le90."""
    from babelrs_core.detector.rbox import poly_to_rbox

    if dets and all(d.get("rbox") is not None for d in dets):
        return np.array([d["rbox"] for d in dets], np.float32).reshape(-1, 5)
    return poly_to_rbox([d["polygon"] for d in dets])


def rotated_inputs(
    images: Sequence[GtImage],
    preds: Mapping[int, Sequence[Detection]],
    num_classes: int,
    ignore_difficult: bool = True,
) -> tuple[list[list[np.ndarray]], list[dict[str, np.ndarray]]]:
    """mmrotate's ``eval_rbbox_map`` inputs from polygons: ``images`` as for
    :func:`coco_ground_truth` with ``"poly"`` (8 values) per object, ``preds`` as for
    :func:`coco_detections` with ``"polygon"`` (or ``"rbox"``, used when every detection has one)
    per detection, the inference API's keys. Boxes become le90 ``(cx, cy, w, h, θ)``; difficult
    objects go to ``bboxes_ignore`` when ``ignore_difficult``."""
    from babelrs_core.detector.rbox import poly_to_rbox

    det_results, annotations = [], []
    for img in images:
        objs = img["objects"]
        ign = np.array([bool(o.get("difficult")) and ignore_difficult for o in objs], bool)
        rb = poly_to_rbox([o["poly"] for o in objs]).astype(np.float32)
        labels = np.array([int(o["label"]) for o in objs], np.int64)
        annotations.append(
            {
                "bboxes": rb[~ign],
                "labels": labels[~ign],
                "bboxes_ignore": rb[ign],
                "labels_ignore": labels[ign],
            }
        )
        dets = list(preds.get(img["id"], []))
        drb = detection_rboxes(dets)
        sc = np.array([float(d["score"]) for d in dets], np.float32).reshape(-1, 1)
        dl = np.array([int(d["label"]) for d in dets], np.int64)
        full = np.concatenate([drb, sc], 1)
        det_results.append([full[dl == k] for k in range(num_classes)])
    return det_results, annotations


class RotatedClassAP(TypedDict):
    """One class's rotated AP at one IoU (:func:`rotated_ap`)."""

    num_gts: int
    num_dets: int
    recall: np.ndarray  # cumulative, detections by descending score
    precision: np.ndarray
    ap: float  # VOC area AP, 0..1


def rotated_ap(
    det_results: list[list[np.ndarray]], annotations: list[dict[str, np.ndarray]], iou_thr: float
) -> list[RotatedClassAP]:
    """Per class ``{"num_gts", "num_dets", "recall", "precision", "ap"}`` at one IoU: the loop of
    mmrotate's ``eval_rbbox_map`` (VOC area AP, rotated IoU) without its process pool, which
    spawns fresh interpreters at every call."""
    from mmdet.evaluation.functional import average_precision
    from mmrotate.evaluation.functional.mean_ap import get_cls_results, tpfp_default

    out: list[RotatedClassAP] = []
    for k in range(len(det_results[0]) if det_results else 0):
        cls_dets, cls_gts, cls_ign = get_cls_results(det_results, annotations, k, "rbox")
        num_gts = int(sum(g.shape[0] for g in cls_gts))
        dets = np.vstack(cls_dets) if cls_dets else np.zeros((0, 6))
        if not len(dets):
            out.append(
                {
                    "num_gts": num_gts,
                    "num_dets": 0,
                    "recall": np.zeros(0),
                    "precision": np.zeros(0),
                    "ap": 0.0,
                }
            )
            continue
        tpfp = [
            tpfp_default(d, g, i, iou_thr, "rbox")
            for d, g, i in zip(cls_dets, cls_gts, cls_ign, strict=True)
        ]
        tp = np.hstack([t for t, _ in tpfp])[0]
        fp = np.hstack([f for _, f in tpfp])[0]
        order = np.argsort(-dets[:, -1])
        tp, fp = np.cumsum(tp[order]), np.cumsum(fp[order])
        eps = np.finfo(np.float32).eps
        recall = tp / max(num_gts, eps)
        precision = tp / np.maximum(tp + fp, eps)
        ap = float(average_precision(recall, precision, "area")) if num_gts else 0.0
        out.append(
            {
                "num_gts": num_gts,
                "num_dets": len(dets),
                "recall": recall,
                "precision": precision,
                "ap": ap,
            }
        )
    return out


def evaluate_rotated(
    name: str,
    images: Sequence[GtImage],
    preds: Mapping[int, Sequence[Detection]],
    class_names: Sequence[str],
    ignore_difficult: bool = True,
    iou_thrs: Sequence[float] = tuple(IOU_THRESHOLDS),
) -> DatasetScore:
    """Per-class rotated AP@50 / AP(.5:.95) (DOTA metric, VOC area) of one oriented dataset."""
    det_results, annotations = rotated_inputs(images, preds, len(class_names), ignore_difficult)
    per_t = [rotated_ap(det_results, annotations, float(t)) for t in iou_thrs]
    classes = []
    for k, cname in enumerate(class_names):
        n = per_t[0][k]["num_gts"] if per_t and det_results else 0
        if n == 0:
            classes.append(ClassScore(cname, 0, 0.0, 0.0, []))
            continue
        aps = [r[k]["ap"] for r in per_t]
        pr50 = precision_at_recalls(per_t[0][k]["recall"], per_t[0][k]["precision"])
        classes.append(ClassScore(cname, n, 100 * aps[0], 100 * float(np.mean(aps)), pr50))
    n_obj = sum(len(a["labels"]) for a in annotations)
    n_det = sum(len(d) for img in det_results for d in img)
    return DatasetScore(name, classes, len(images), n_obj, n_det, box_type="obox")


def _mean(classes: Sequence[ClassScore], key: str) -> float:
    return round(float(np.mean([getattr(c, key) for c in classes])), 4) if classes else 0.0


class EvalInfo(TypedDict):
    """``eval_info.json``: what an evaluation scored and how (the promotion gate compares only
    evaluations with equal ``data_hash``)."""

    checkpoint: str
    manifest: str
    splits: dict[str, str]  # dataset -> split
    init: str | None
    encoder: str | None
    iters: int | None
    box_types: dict[str, str]  # dataset -> hbox | obox
    metrics: dict[str, str]  # dataset -> how its AP was computed
    ignore_difficult: bool
    max_dets: int
    weights_sha256: str | None
    data_hash: str
    eval_s: float
    scale: str


class DatasetSummary(TypedDict):
    """One dataset's entry of ``metrics/eval.json`` (percent)."""

    ap50: float
    map: float
    classes_scored: int
    images: int
    objects: int
    detections: int
    hbox_ap50: NotRequired[float]  # oriented datasets: horizontal COCO scores
    hbox_map: NotRequired[float]


class OverallSummary(TypedDict):
    """``metrics/eval.json``'s ``overall`` entry (percent)."""

    ap50: float
    map: float
    hmap: float
    classes_scored: int
    hbox_ap50: NotRequired[float]  # some dataset oriented: the all-horizontal scores
    hbox_map: NotRequired[float]
    hbox_hmap: NotRequired[float]


def summarize(scores: Sequence[DatasetScore]) -> dict[str, Any]:
    """Per-dataset and overall AP@50 / mAP, H-mAP; the shape of ``metrics/eval.json``:
    ``{"overall": OverallSummary, <dataset name>: DatasetSummary, ...}``.

    ``ap50`` / ``map`` are each dataset's main scores (rotated for ``obox`` datasets), and the
    overall scores mix them as the paper does. When some dataset is oriented, ``hbox_ap50`` /
    ``hbox_map`` give its horizontal COCO scores, and ``overall.hbox_*`` the all-horizontal
    overall and H-mAP.
    """
    out: dict[str, Any] = {}
    all_classes: list[ClassScore] = []
    hbox_classes: list[ClassScore] = []
    for s in scores:
        entry: DatasetSummary = {
            "ap50": round(s.ap50, 4),
            "map": round(s.map, 4),
            "classes_scored": len(s.scored),
            "images": s.num_images,
            "objects": s.num_objects,
            "detections": s.num_detections,
        }
        if s.hbox is not None:
            entry["hbox_ap50"] = round(s.hbox.ap50, 4)
            entry["hbox_map"] = round(s.hbox.map, 4)
        out[s.name] = entry
        all_classes += s.scored
        hbox_classes += (s.hbox or s).scored
    overall: OverallSummary = {
        "ap50": _mean(all_classes, "ap50"),
        "map": _mean(all_classes, "ap"),
        "hmap": round(harmonic_mean([s.map for s in scores]), 4) if scores else 0.0,
        "classes_scored": len(all_classes),
    }
    if any(s.hbox is not None for s in scores):
        overall["hbox_ap50"] = _mean(hbox_classes, "ap50")
        overall["hbox_map"] = _mean(hbox_classes, "ap")
        overall["hbox_hmap"] = round(harmonic_mean([(s.hbox or s).map for s in scores]), 4)
    return {"overall": overall, **out}


def per_class_rows(scores: Sequence[DatasetScore]) -> list[dict[str, Any]]:
    """One row per (dataset, class) with ground truth counts and APs (percent); ``box`` says how
    ``ap50`` / ``map`` were computed, ``hbox_*`` are the horizontal scores of oriented datasets."""
    rows = []
    for s in scores:
        hb = {c.name: c for c in s.hbox.classes} if s.hbox is not None else {}
        for c in s.classes:
            h = hb.get(c.name)
            rows.append(
                {
                    "dataset": s.name,
                    "class": c.name,
                    "box": s.box_type,
                    "num_gt": c.num_gt,
                    "ap50": round(c.ap50, 4) if c.num_gt else None,
                    "map": round(c.ap, 4) if c.num_gt else None,
                    "hbox_ap50": round(h.ap50, 4) if h is not None and h.num_gt else None,
                    "hbox_map": round(h.ap, 4) if h is not None and h.num_gt else None,
                }
            )
    return rows
