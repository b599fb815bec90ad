"""Paired bootstrap over evaluation images: how sure is "detector A scores higher than B"?

Two detectors evaluated on the *same* images are compared on resamples of those images: each
resample draws, per dataset, as many image indices as the split has, with replacement (seeded),
and recomputes every score (per-dataset AP@50 / mAP, overall AP@50 / mAP, H-mAP) for both
detectors on that resampled image set. The difference's point estimate is the difference on the
evaluated images themselves; its ``level`` (95 %) interval is the percentile interval of the
differences over the resamples. The resampling is stratified by dataset (each split keeps its own
size; H-mAP needs all three datasets) and *paired* (both detectors see the same resampled images,
so what the images have in common cancels).

AP is not additive over images, so every resample is scored in full, but the per-image work is
done once: :func:`coco_table` / :func:`rotated_table` run the metrics' own per-image matching
(pycocotools' ``evaluateImg``; mmrotate's ``tpfp_default``) on the evaluated images and keep, per
class and image, each detection's score and its true / false positive flag at every IoU threshold,
and the number of ground-truth objects. Matching is per image, so a resample only has to gather
those rows in resample order, sort them by score the way the metric does, and accumulate:
:func:`score_tables` does pycocotools' ``accumulate`` (101-point interpolated precision) for
``hbox`` datasets and mmdet's VOC area ``average_precision`` for ``obox`` ones, vectorised over
the IoU thresholds, with the same dtypes, sorts and tie order as the metric; on the identity
resample it returns exactly the numbers of :mod:`babelrs_core.evaluation.metrics` (tested, as are
random resamples against the metric run on the resampled image set).

Several fine-tuning seeds: :func:`paired_difference` takes one score distribution per seed for
each side, pairs them seed by seed (only seeds both sides have), and averages each score over the
seeds *within each resample* before taking the difference. The interval therefore covers the
variation from the evaluation images, for these trained detectors; the variation from training
again with another seed is not in it (the seed spread is reported beside it).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np

from babelrs_core.concepts import DATASETS
from babelrs_core.detections import Detection, GtImage
from babelrs_core.errors import BadInputError
from babelrs_core.evaluation.metrics import (
    IOU_THRESHOLDS,
    RECALL_POINTS,
    ClassScore,
    DatasetScore,
    EvalInfo,
    coco_class_score,
    coco_ground_truth,
    coco_matches,
    gt_image,
    harmonic_mean,
    rotated_inputs,
)

LEVEL = 0.95


@dataclass(frozen=True)
class ClassTable:
    """One class of one dataset: every detection's matching outcome, grouped by image.

    Image ``i``'s detections are ``start[i] : start[i] + count[i]`` of ``scores`` / ``tp`` /
    ``fp`` (in the order the metric concatenates them); ``npos[i]``: its ground-truth objects
    of this class that count (not ignored)."""

    name: str
    scores: np.ndarray  # (D,)
    tp: np.ndarray  # (T, D) true positive at each IoU threshold
    fp: np.ndarray  # (T, D) false positive (neither: matched an ignored object)
    start: np.ndarray  # (I,)
    count: np.ndarray  # (I,)
    npos: np.ndarray  # (I,)


@dataclass(frozen=True)
class DatasetTable:
    """One dataset's evaluated images, one detector: a :class:`ClassTable` per class."""

    name: str
    box_type: str  # hbox: COCO 101-point AP | obox: rotated VOC area AP
    classes: list[ClassTable]
    num_images: int


def _table(
    name: str,
    per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]],
    dtype: Any,
    n_thr: int,
) -> ClassTable:
    count = np.array([len(s) for s, _, _, _ in per_image], np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    total = int(count.sum())
    scores = (np.concatenate([s for s, _, _, _ in per_image]) if total else np.zeros(0)).astype(
        dtype
    )
    tp = np.concatenate([t for _, t, _, _ in per_image], 1) if total else np.zeros((n_thr, 0))
    fp = np.concatenate([f for _, _, f, _ in per_image], 1) if total else np.zeros((n_thr, 0))
    npos = np.array([n for _, _, _, n in per_image], np.int64)
    return ClassTable(name, scores, tp, fp, start, count, npos)


def coco_table(
    name: str,
    gt_images: Sequence[GtImage],
    dets: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    ignore_difficult: bool = True,
    max_dets: int = 100,
) -> DatasetTable:
    """Per-image COCO matching of a horizontal-box dataset (``gt_images`` as for
    :func:`~babelrs_core.evaluation.metrics.coco_ground_truth`, ``dets`` COCO results as
    :func:`~babelrs_core.evaluation.metrics.coco_detections` makes them), as
    :func:`~babelrs_core.evaluation.metrics.evaluate_coco` runs it."""

    ids = [int(img["id"]) for img in gt_images]
    if any(b <= a for a, b in itertools.pairwise(ids)):
        raise ValueError("coco_table: image ids must increase (COCO orders images by id)")
    gt = coco_ground_truth(list(gt_images), class_names, ignore_difficult)
    n_thr = len(IOU_THRESHOLDS)
    found: dict[tuple[int, int], dict[str, Any]] = {}
    if dets and gt["images"]:
        ev = coco_matches(gt, list(dets), max_dets)
        area_all = list(ev.params.areaRng[0])
        for e in ev.evalImgs:
            if e is not None and list(e["aRng"]) == area_all:
                found[(int(e["category_id"]), int(e["image_id"]))] = e
    counts: dict[tuple[int, int], int] = {}
    for a in gt["annotations"]:
        if not a["iscrowd"]:
            key = (a["category_id"], a["image_id"])
            counts[key] = counts.get(key, 0) + 1
    classes = []
    empty = (np.zeros(0), np.zeros((n_thr, 0), bool), np.zeros((n_thr, 0), bool))
    for k, cname in enumerate(class_names):
        rows = []
        for img in gt_images:
            e = found.get((k + 1, int(img["id"])))
            if e is None:  # no detection and no ground truth of this class (or no detections)
                rows.append((*empty, counts.get((k + 1, int(img["id"])), 0)))
                continue
            dtm = np.asarray(e["dtMatches"]).astype(bool)
            dt_ig = np.asarray(e["dtIgnore"]).astype(bool)
            npos = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            rows.append(
                (
                    np.asarray(e["dtScores"], float).reshape(-1),
                    (dtm & ~dt_ig).reshape(n_thr, -1),
                    (~dtm & ~dt_ig).reshape(n_thr, -1),
                    npos,
                )
            )
        classes.append(_table(cname, rows, np.float64, n_thr))
    return DatasetTable(name, "hbox", classes, len(gt_images))


def rotated_table(
    name: str,
    gt_images: Sequence[GtImage],
    preds: Mapping[int, Sequence[Detection]],
    class_names: Sequence[str],
    ignore_difficult: bool = True,
    iou_thrs: Sequence[float] = tuple(IOU_THRESHOLDS),
) -> DatasetTable:
    """Per-image rotated matching of an oriented dataset (arguments as for
    :func:`~babelrs_core.evaluation.metrics.evaluate_rotated`), with mmrotate's ``tpfp_default``
    as :func:`~babelrs_core.evaluation.metrics.rotated_ap` calls it."""
    from mmrotate.evaluation.functional.mean_ap import get_cls_results, tpfp_default

    det_results, annotations = rotated_inputs(gt_images, preds, len(class_names), ignore_difficult)
    classes = []
    n_thr = len(iou_thrs)
    for k, cname in enumerate(class_names):
        cls_dets, cls_gts, cls_ign = (
            get_cls_results(det_results, annotations, k, "rbox") if det_results else ([], [], [])
        )
        rows = []
        for d, g, ig in zip(cls_dets, cls_gts, cls_ign, strict=True):
            if len(d):
                pairs = [tpfp_default(d, g, ig, float(t), "rbox") for t in iou_thrs]
                tp = np.concatenate([p[0] for p in pairs], 0)
                fp = np.concatenate([p[1] for p in pairs], 0)
            else:
                tp = fp = np.zeros((n_thr, 0), np.float32)
            rows.append((d[:, -1], tp, fp, int(g.shape[0])))
        classes.append(_table(cname, rows, np.float32, n_thr))
    return DatasetTable(name, "obox", classes, len(gt_images))


# -- scoring a resample -----------------------------------------------------------------------


def _gather(c: ClassTable, idx: np.ndarray) -> np.ndarray:
    """Positions of the detections of the images ``idx``, image after image (resample order)."""
    counts = c.count[idx]
    total = int(counts.sum())
    if not total:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    offset = np.repeat(c.start[idx] - (ends - counts), counts)
    return offset + np.arange(total)


def _coco_precision(c: ClassTable, pos: np.ndarray, npig: int) -> np.ndarray:
    """pycocotools' ``accumulate`` for one class: interpolated precision ``[T, R]``."""
    n_thr = c.tp.shape[0]
    q = np.zeros((n_thr, len(RECALL_POINTS)))
    if not len(pos):
        return q
    scores = c.scores[pos]
    inds = np.argsort(-scores, kind="mergesort")
    tps = c.tp[:, pos][:, inds]
    fps = c.fp[:, pos][:, inds]
    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    nd = pr.shape[1]
    for t in range(n_thr):
        at = np.searchsorted(rc[t], RECALL_POINTS, side="left")
        q[t] = np.where(at < nd, pr[t][np.minimum(at, nd - 1)], 0.0)
    return q


def _voc_aps(c: ClassTable, pos: np.ndarray, num_gts: int) -> list[float]:
    """``rotated_ap``'s VOC area AP of one class at every IoU threshold (float32 as mmdet)."""
    n_thr = c.tp.shape[0]
    if not len(pos):
        return [0.0] * n_thr
    order = np.argsort(-c.scores[pos])
    tp = np.cumsum(c.tp[:, pos][:, order], axis=1)
    fp = np.cumsum(c.fp[:, pos][:, order], axis=1)
    eps = np.finfo(np.float32).eps
    recall = tp / max(num_gts, eps)
    precision = tp / np.maximum(tp + fp, eps)
    zeros = np.zeros((n_thr, 1), dtype=recall.dtype)
    mrec = np.hstack((zeros, recall, np.ones((n_thr, 1), dtype=recall.dtype)))
    mpre = np.hstack((zeros, precision, zeros))
    mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    out = []
    for t in range(n_thr):
        ind = np.where(mrec[t, 1:] != mrec[t, :-1])[0]
        ap = np.float32(np.sum((mrec[t, ind + 1] - mrec[t, ind]) * mpre[t, ind + 1]))
        out.append(float(ap))
    return out


def score_table(table: DatasetTable, idx: np.ndarray | None = None) -> DatasetScore:
    """The dataset's scores on the images ``idx`` (indices into its images, repeats allowed,
    in that order; None: all, as evaluated) -- what the metric gives on that image set."""
    if idx is None:
        idx = np.arange(table.num_images)
    classes = []
    for c in table.classes:
        n = int(c.npos[idx].sum())
        if n == 0:
            classes.append(ClassScore(c.name, 0, 0.0, 0.0, []))
            continue
        pos = _gather(c, idx)
        if table.box_type == "hbox":
            cs = coco_class_score(c.name, n, _coco_precision(c, pos, n))
            classes.append(ClassScore(c.name, n, cs.ap50, cs.ap, []))
        else:
            aps = _voc_aps(c, pos, n)
            classes.append(ClassScore(c.name, n, 100 * aps[0], 100 * float(np.mean(aps)), []))
    n_det = int(sum(int(c.count[idx].sum()) for c in table.classes))
    n_obj = int(sum(int(c.npos[idx].sum()) for c in table.classes))
    return DatasetScore(table.name, classes, len(idx), n_obj, n_det, box_type=table.box_type)


def overall(scores: Sequence[DatasetScore]) -> dict[str, float]:
    """``<dataset>.ap50|map`` and ``overall.ap50|map|hmap`` (unrounded, percent), as
    :func:`~babelrs_core.evaluation.metrics.summarize` computes them."""
    out: dict[str, float] = {}
    classes: list[ClassScore] = []
    for s in scores:
        out[f"{s.name}.ap50"] = s.ap50
        out[f"{s.name}.map"] = s.map
        classes += s.scored
    out["overall.ap50"] = float(np.mean([c.ap50 for c in classes])) if classes else 0.0
    out["overall.map"] = float(np.mean([c.ap for c in classes])) if classes else 0.0
    out["overall.hmap"] = harmonic_mean([s.map for s in scores]) if scores else 0.0
    return out


def score_tables(
    tables: Sequence[DatasetTable], idx: Mapping[str, np.ndarray] | None = None
) -> dict[str, float]:
    """Every score of one detector on one resample (``idx``: per dataset, its image indices)."""
    return overall([score_table(t, None if idx is None else idx[t.name]) for t in tables])


def resample_indices(sizes: Mapping[str, int], samples: int, seed: int) -> dict[str, np.ndarray]:
    """Per dataset, ``(samples, size)`` image indices drawn with replacement: one
    ``numpy.random.default_rng(seed)`` draws the datasets in the order of ``sizes``."""
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, n, size=(samples, n)) for name, n in sizes.items()}


def distribution(
    tables: Sequence[DatasetTable], indices: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every score of one detector on each resample: ``{key: (samples,)}``."""
    samples = next(iter(indices.values())).shape[0] if indices else 0
    rows = [score_tables(tables, {k: v[b] for k, v in indices.items()}) for b in range(samples)]
    keys = list(rows[0]) if rows else []
    return {k: np.array([r[k] for r in rows]) for k in keys}


class IntervalDict(TypedDict):
    """:meth:`Interval.as_dict`: what ``summary.json`` and the claims tables hold."""

    delta: float
    low: float
    high: float
    level: float
    samples: int
    seeds: list[int]
    verdict: str  # shown | reversed | not shown


@dataclass(frozen=True)
class Interval:
    """A difference ``a - b`` with its percentile bootstrap interval."""

    delta: float
    low: float
    high: float
    level: float
    samples: int
    seeds: tuple[int, ...] = ()

    @property
    def verdict(self) -> str:
        """``shown`` (interval above 0), ``reversed`` (below 0) or ``not shown`` (contains 0)."""
        if self.low > 0:
            return "shown"
        if self.high < 0:
            return "reversed"
        return "not shown"

    def as_dict(self) -> IntervalDict:
        return {
            "delta": self.delta,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "samples": self.samples,
            "seeds": list(self.seeds),
            "verdict": self.verdict,
        }


def percentile_interval(
    deltas: np.ndarray, point: float, level: float = LEVEL, seeds: Sequence[int] = ()
) -> Interval:
    """Percentile interval of the resampled differences (numpy's linear interpolation)."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.asarray(deltas, float), [tail, 100 - tail])
    return Interval(float(point), float(low), float(high), level, len(deltas), tuple(seeds))


@dataclass
class RunScores:
    """One evaluated detector (one seed): scores on the evaluated images and on each resample."""

    full: dict[str, float]
    resampled: dict[str, np.ndarray]


def run_scores(tables: Sequence[DatasetTable], indices: Mapping[str, np.ndarray]) -> RunScores:
    return RunScores(score_tables(tables), distribution(tables, indices))


def paired_difference(
    a: Mapping[int, RunScores],
    b: Mapping[int, RunScores],
    keys: Sequence[str] | None = None,
    level: float = LEVEL,
) -> dict[str, Interval]:
    """``a - b`` per score key, seeds paired: both sides averaged over the seeds they share,
    within each resample (all runs must have been scored on the same resamples)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    keys = list(keys) if keys is not None else list(a[seeds[0]].full)
    out = {}
    for key in keys:
        point = float(np.mean([a[s].full[key] for s in seeds])) - float(
            np.mean([b[s].full[key] for s in seeds])
        )
        ra = np.mean([a[s].resampled[key] for s in seeds], axis=0)
        rb = np.mean([b[s].resampled[key] for s in seeds], axis=0)
        out[key] = percentile_interval(ra - rb, point, level, seeds)
    return out


# -- reading an evaluation's outputs ----------------------------------------------------------


class MissingPredictionsError(BadInputError, FileNotFoundError):
    """An evaluation folder without ``predictions/<dataset>.json`` (written before they were)."""


def read_predictions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise MissingPredictionsError(str(path))
    return list(json.loads(path.read_text()))


def ground_truth(
    manifest: Path, dataset: str, split: str, ignore_difficult: bool, oriented: bool
) -> list[GtImage]:
    """The evaluated images of one dataset as the evaluation stage builds them (same order and
    ids: ``1..n`` in the order of ``detector.data.image_items``), from the manifest."""
    from babelrs_core.data.manifest import read_manifest
    from babelrs_core.detector.data import image_items

    items = image_items(read_manifest(manifest), dataset, split, ignore_difficult)
    return [gt_image(it, k + 1, oriented) for k, it in enumerate(items)]


def eval_tables(
    eval_dir: Path,
    gt_cache: dict[tuple[Any, ...], list[GtImage]] | None = None,
    manifest: Path | None = None,
) -> tuple[list[DatasetTable], EvalInfo]:
    """The matching tables of one evaluation folder (``eval_info.json``, ``predictions/``), the
    ground truth read from its manifest (or ``manifest``); and its ``eval_info``. Raises
    :class:`MissingPredictionsError` when it has no predictions."""
    info = cast(EvalInfo, json.loads((eval_dir / "eval_info.json").read_text()))
    gt_cache = {} if gt_cache is None else gt_cache
    man = Path(manifest or info["manifest"])
    ignore = bool(info.get("ignore_difficult", True))
    max_dets = int(info.get("max_dets", 100))
    tables = []
    for ds in [d for d in DATASETS if d in info["splits"]]:
        oriented = (info.get("box_types") or {}).get(ds, "hbox") == "obox"
        key = (str(man), ds, info["splits"][ds], ignore, oriented)
        if key not in gt_cache:
            gt_cache[key] = ground_truth(man, ds, info["splits"][ds], ignore, oriented)
        gt = gt_cache[key]
        ids = {img["file"]: img["id"] for img in gt}
        dets = []
        for d in read_predictions(eval_dir / "predictions" / f"{ds}.json"):
            if d.get("image") not in ids:
                raise ValueError(f"{eval_dir}: prediction for {d.get('image')!r}, not in {ds}")
            dets.append({**d, "image_id": ids[d["image"]]})
        names = DATASETS[ds].class_names
        if oriented:
            preds: dict[int, list[Detection]] = {img["id"]: [] for img in gt}
            for d in dets:  # COCO results back to detections (x, y, w, h -> corners)
                x, y, w, h = (float(v) for v in d["bbox"])
                preds[d["image_id"]].append(
                    Detection(
                        x1=x,
                        y1=y,
                        x2=x + w,
                        y2=y + h,
                        score=float(d["score"]),
                        label=int(d["category_id"]) - 1,
                        polygon=d.get("polygon"),
                        rbox=d.get("rbox"),
                    )
                )
            tables.append(rotated_table(ds, gt, preds, names, ignore))
        else:
            tables.append(coco_table(ds, gt, dets, names, ignore, max_dets))
    return tables, info


def agrees_with(full: Mapping[str, float], ev: Mapping[str, Any], tol: float = 1e-3) -> bool:
    """Do scores recomputed from the predictions match ``metrics/eval.json`` (rounded to 4 dp)?"""
    for key, v in full.items():
        node: Any = ev
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, int | float) or not math.isclose(v, node, abs_tol=tol):
            return False
    return True
