"""The evaluation stage: SOI-Det scores of a fine-tuned detector, written as files that DVC reads
(``metrics/eval.json``, ``plots/*.csv``) and as PNGs (the "Detector fine-tuning" section of
``docs/results.md`` is :mod:`babelrs_core.evaluation.results_section`).

Output layout (``paths.eval_out``)::

    metrics/eval.json      DVC metrics: overall {ap50, map, hmap}, per dataset {ap50, map, ...}
    eval_info.json         what was evaluated: checkpoint, splits, init, timing
    per_class.csv / .md    AP@50 and mAP per (dataset, class), with ground-truth counts
    plots/pr_<dataset>.csv class-mean precision-recall at IoU 0.5 (DVC plots: recall, precision)
    plots/pr_classes.csv   every class's curve (long form)
    plots/pr_curves.png    the curves, one panel per dataset
    plots/samples_<modality>.png  sample images with ground truth (green) and predictions (red)
    orientation.json       oriented datasets: is a low rotated AP an angle or a localisation
                           problem? (per elongated object; see evaluation/orientation.py)
    plots/orientation.png  long-axis error against the true angle, predicted against true aspect
    predictions/<dataset>.json    COCO-style detections of the evaluated split
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from babelrs_core.concepts import DATASET_NAMES, DATASETS
from babelrs_core.config import Params
from babelrs_core.data.image_source import FileSource, ImageRef, ImageSource, open_source
from babelrs_core.detections import Detection, GtImage
from babelrs_core.evaluation import plots
from babelrs_core.evaluation.metrics import (
    DatasetScore,
    EvalInfo,
    coco_detections,
    coco_ground_truth,
    evaluate_coco,
    evaluate_rotated,
    gt_image,
    per_class_rows,
    summarize,
)
from babelrs_core.evaluation.orientation import (
    match_objects,
    orientation_line,
    plot_orientation,
    summarize_orientation,
)
from babelrs_core.io.atomic import atomic_path, write_json, write_text
from babelrs_core.io.markdown import table_head, table_row
from babelrs_core.logs import get_logger

log = get_logger(__name__)


def run_evaluation(
    params: Params,
    manifest: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate the detector in ``checkpoint`` (default ``paths.finetune_out``) on each dataset's
    SOI-Det evaluation split (``evaluation.splits``); write the files above under ``out``."""
    from babelrs_core.data.manifest import read_manifest
    from babelrs_core.detector.data import image_items
    from babelrs_core.detector.inference import Detector

    cfg = params.evaluation
    manifest = Path(manifest or params.paths.manifest)
    checkpoint = Path(checkpoint or params.paths.finetune_out)
    out = Path(out or params.paths.eval_out)
    t0 = time.perf_counter()
    detector = Detector.from_checkpoint(checkpoint)
    frame = read_manifest(manifest)
    rng = np.random.default_rng(params.seed)
    scores: list[DatasetScore] = []
    samples: dict[str, list[Any]] = {}
    splits: dict[str, str] = {}
    orientation: dict[str, dict[str, Any]] = {}
    # what was evaluated and how: the promotion gate compares only evaluations with equal hashes
    data_hash = hashlib.sha256(json.dumps([cfg.ignore_difficult, cfg.max_dets]).encode())
    for ds in [d for d in DATASET_NAMES if d in detector.datasets]:
        split = cfg.splits.get(ds)
        if split is None:
            raise ValueError(f"evaluation.splits has no split for dataset {ds!r}")
        splits[ds] = split
        oriented = detector.box_types[ds] == "obox"
        items = image_items(frame, ds, split, cfg.ignore_difficult)
        if not items:
            raise ValueError(f"{manifest}: no {ds} images in evaluation split {split!r}")
        pick = set(rng.choice(len(items), min(cfg.samples_per_modality, len(items)), False))

        def visit(
            index: int, item: dict, arr: np.ndarray, objs: list, dets: list, ds=ds, pick=pick
        ) -> None:
            data_hash.update(_item_key(ds, item).encode())
            data_hash.update(np.ascontiguousarray(arr).tobytes())
            if index in pick:
                samples.setdefault(DATASETS[ds].modality, []).append(
                    (item["img_id"], arr, objs, dets)
                )

        gt_images, preds = predict_split(
            detector, items, ds, cfg.batch_size, visit, source=open_source(params)
        )
        score = score_split(ds, gt_images, preds, oriented, cfg.ignore_difficult, cfg.max_dets)
        if oriented:
            objects = match_objects(
                gt_images, preds, DATASETS[ds].class_names, cfg.ignore_difficult
            )
            orientation[ds] = {"summary": summarize_orientation(objects), "objects": objects}
        _write_predictions(out / "predictions" / f"{ds}.json", gt_images, coco_detections(preds))
        scores.append(score)
    summary = summarize(scores)
    write_outputs(out, scores, summary)
    write_json(out / "orientation.json", orientation)  # {} when no head is oriented
    if orientation:
        plot_orientation(
            {d: o["objects"] for d, o in orientation.items()}, out / "plots" / "orientation.png"
        )
    for modality, chosen in samples.items():
        tiles = [plots.draw_detections(a, o, d, cfg.draw_score_thr) for _, a, o, d in chosen]
        title = f"{modality}: ground truth green, predictions red (score >= {cfg.draw_score_thr})"
        plots.save_png(plots.mosaic(tiles, title), out / "plots" / f"samples_{modality}.png")
    info: EvalInfo = {
        "checkpoint": str(checkpoint),
        "manifest": str(manifest),
        "splits": splits,
        "init": detector.info.get("init"),
        "encoder": detector.info.get("encoder"),
        "iters": detector.info.get("iters"),
        "box_types": {ds: detector.box_types[ds] for ds in splits},
        "metrics": {
            ds: "rotated IoU, VOC area AP (mmrotate DOTA metric); hbox_*: COCO of enclosing boxes"
            if detector.box_types[ds] == "obox"
            else "COCO bbox AP (pycocotools)"
            for ds in splits
        },
        "ignore_difficult": cfg.ignore_difficult,
        "max_dets": cfg.max_dets,
        "weights_sha256": detector.info.get("sha256"),
        "data_hash": data_hash.hexdigest()[:16],
        "eval_s": round(time.perf_counter() - t0, 2),
        "scale": "percent (0..100)",
    }
    write_json(out / "eval_info.json", info)
    if progress:
        log.info("%s", format_summary(summary))
        for d, o in orientation.items():
            log.info("%s", orientation_line(d, o["summary"]))
    return {**summary, "info": info, "out": str(out)}


def predict_split(
    detector: Any,
    items: Sequence[dict[str, Any]],
    dataset: str,
    batch_size: int,
    visit: Callable[[int, dict, np.ndarray, list, list], None] | None = None,
    source: ImageSource | None = None,
) -> tuple[list[GtImage], dict[int, list[Detection]]]:
    """Run ``detector`` over the evaluation ``items`` of one dataset in batches: the ground-truth
    image records and ``{image id: detections}`` that the metrics read. ``visit(index, item,
    image, objects, detections)`` sees every image (hashing, drawn samples). Pixels come from
    ``source`` (default: the loose files)."""
    source = source or FileSource()

    oriented = detector.box_types[dataset] == "obox"
    gt_images: list[GtImage] = []
    preds: dict[int, list[Detection]] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        arrays = [source.load(ImageRef.of_item(it)) for it in chunk]
        dets = detector.predict_batch(arrays, dataset)
        for k, (it, arr, d) in enumerate(zip(chunk, arrays, dets, strict=True)):
            image_id = start + k + 1
            record = gt_image(it, image_id, oriented)
            gt_images.append(record)
            preds[image_id] = d
            if visit is not None:
                visit(start + k, it, arr, record["objects"], d)
    return gt_images, preds


def score_split(
    dataset: str,
    gt_images: Sequence[GtImage],
    preds: dict[int, list[Detection]],
    oriented: bool,
    ignore_difficult: bool,
    max_dets: int,
) -> DatasetScore:
    """COCO scores for a horizontal head; rotated VOC AP (the main score) with the horizontal
    COCO scores beside it for an oriented one."""
    names = DATASETS[dataset].class_names
    gt = coco_ground_truth(list(gt_images), names, ignore_difficult)
    score = evaluate_coco(dataset, gt, coco_detections(preds), max_dets)
    if oriented:
        hbox = score
        score = evaluate_rotated(dataset, gt_images, preds, names, ignore_difficult)
        score.hbox = hbox
    return score


def _item_key(dataset: str, item: dict[str, Any]) -> str:
    """One evaluated image's identity and ground truth, as text for the evaluation data hash."""
    objs = [(i["bbox"], i["bbox_label"], bool(i["ignore_flag"])) for i in item["instances"]]
    return json.dumps([dataset, item["img_id"], objs], default=float)


def _write_predictions(target: Path, images: list[GtImage], dets: list[dict[str, Any]]) -> None:
    names = {img["id"]: img["file"] for img in images}
    write_json(target, [{**d, "image": names[d["image_id"]]} for d in dets])


def write_outputs(out: Path, scores: Sequence[DatasetScore], summary: dict[str, Any]) -> None:
    """``metrics/eval.json``, per-class tables and precision-recall files."""
    write_json(out / "metrics" / "eval.json", summary)
    rows = per_class_rows(scores)
    target = out / "per_class.csv"
    with atomic_path(target, suffix=".csv") as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["dataset", "class"])
        w.writeheader()
        w.writerows(rows)
    head = ["dataset", "class", "box", "GT objects", "AP@50", "mAP", "hbox AP@50", "hbox mAP"]
    lines = table_head(head, "lllr")

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    for r in rows:
        lines.append(
            table_row(
                [r["dataset"], r["class"], r["box"], r["num_gt"]]
                + [fmt(r[k]) for k in ("ap50", "map", "hbox_ap50", "hbox_map")]
            )
        )
    write_text(out / "per_class.md", "\n".join(lines) + "\n")
    for s in scores:
        plots.write_pr_csv(s, out / "plots" / f"pr_{s.name}.csv")
    plots.write_pr_classes_csv(scores, out / "plots" / "pr_classes.csv")
    plots.plot_pr_curves(scores, out / "plots" / "pr_curves.png")


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines of ``eval.json``."""
    o = summary["overall"]
    lines = [f"overall: AP@50 {o['ap50']:.2f}  mAP {o['map']:.2f}  H-mAP {o['hmap']:.2f}"]
    if "hbox_hmap" in o:
        lines.append(
            f"overall (all horizontal): AP@50 {o['hbox_ap50']:.2f}  "
            f"mAP {o['hbox_map']:.2f}  H-mAP {o['hbox_hmap']:.2f}"
        )
    for ds in DATASETS:
        if ds in summary:
            s = summary[ds]
            line = f"{ds}: AP@50 {s['ap50']:.2f}  mAP {s['map']:.2f}"
            if "hbox_map" in s:
                line += f" (rotated; horizontal {s['hbox_ap50']:.2f} / {s['hbox_map']:.2f})"
            lines.append(line)
    return "\n".join(lines)


# -- docs/results.md ------------------------------------------------------------------------------
