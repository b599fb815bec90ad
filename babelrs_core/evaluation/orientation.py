"""Orientation diagnostics of an oriented head: is a low rotated AP a localisation problem or an
angle problem?

For every elongated ground-truth object (long side / short side >= ``min_aspect``; the axis of a
near-square box is undefined) the highest-scoring detection **of its class** whose enclosing
horizontal box overlaps the object's enclosing box with IoU >= ``hbox_iou`` counts as "found
horizontally". For those pairs it records the long-axis angle error (degrees, 0..90: the axes are
undirected lines), both aspect ratios and the rotated IoU. A head that finds objects but has not
learned their angle shows many "found" objects, a large median angle error, predicted aspect ratios
near 1 and rotated IoUs below 0.5; an angle bug (a convention flip) shows errors piled up near 90°.

The evaluation stage writes ``orientation.json`` and ``plots/orientation.png`` with these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from babelrs_core.detections import Detection, GtImage


def long_axis_deg(rboxes: np.ndarray) -> np.ndarray:
    """Direction of each box's long side in degrees, in [0, 180) (an undirected line)."""
    rb = np.asarray(rboxes, np.float64).reshape(-1, 5)
    deg = np.degrees(rb[:, 4]) + np.where(rb[:, 2] >= rb[:, 3], 0.0, 90.0)
    return np.mod(deg, 180.0)


def axis_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between two undirected lines given in degrees: 0..90."""
    d = np.mod(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), 180.0)
    return np.minimum(d, 180.0 - d)


def aspect(rboxes: np.ndarray) -> np.ndarray:
    """Long side / short side of each box (inf for a degenerate one)."""
    rb = np.asarray(rboxes, np.float64).reshape(-1, 5)
    lo, hi = np.minimum(rb[:, 2], rb[:, 3]), np.maximum(rb[:, 2], rb[:, 3])
    with np.errstate(divide="ignore"):
        return np.where(lo > 0, hi / np.maximum(lo, 1e-12), np.inf)


def _rotated_iou(a: np.ndarray, b: np.ndarray) -> float:
    import torch
    from mmcv.ops import box_iou_rotated

    ta = torch.as_tensor(np.asarray(a, np.float32).reshape(1, 5))
    tb = torch.as_tensor(np.asarray(b, np.float32).reshape(1, 5))
    return float(box_iou_rotated(ta, tb)[0, 0])


def match_objects(
    images: Sequence[GtImage],
    preds: Mapping[int, Sequence[Detection]],
    class_names: Sequence[str],
    ignore_difficult: bool = True,
    min_aspect: float = 1.5,
    hbox_iou: float = 0.5,
) -> list[dict[str, Any]]:
    """One record per elongated, non-ignored ground-truth object of ``images`` (the evaluation's
    ``{"id", "objects": [{"bbox", "label", "difficult", "poly"}]}``) against ``preds`` (the
    inference API's detections: ``x1..y2``, ``label``, ``score``, ``rbox`` or ``polygon``)."""
    from mmdet.evaluation.functional import bbox_overlaps

    from babelrs_core.detector.rbox import poly_to_rbox
    from babelrs_core.evaluation.metrics import detection_rboxes

    records = []
    for img in images:
        objs = [o for o in img["objects"] if not (ignore_difficult and o.get("difficult"))]
        if not objs:
            continue
        gt_rb = poly_to_rbox([o["poly"] for o in objs])
        keep = aspect(gt_rb) >= min_aspect
        dets = list(preds.get(img["id"], []))
        det_rb = detection_rboxes(dets)
        det_hb = np.array([[d["x1"], d["y1"], d["x2"], d["y2"]] for d in dets], np.float64)
        det_lab = np.array([int(d["label"]) for d in dets], np.int64)
        det_sc = np.array([float(d["score"]) for d in dets], np.float64)
        for o, rb, elongated in zip(objs, gt_rb, keep, strict=True):
            if not elongated:
                continue
            rec: dict[str, Any] = {
                "image": img.get("file", img["id"]),
                "class": class_names[int(o["label"])],
                "gt_axis_deg": float(long_axis_deg(rb)[0]),
                "gt_aspect": float(aspect(rb)[0]),
                "found": False,
            }
            same = np.flatnonzero(det_lab == int(o["label"]))
            if len(same):
                ious = bbox_overlaps(np.asarray([o["bbox"]], np.float64), det_hb[same])[0]
                ok = same[ious >= hbox_iou]
                if len(ok):
                    j = int(ok[np.argmax(det_sc[ok])])
                    rec.update(
                        found=True,
                        score=float(det_sc[j]),
                        pred_axis_deg=float(long_axis_deg(det_rb[j])[0]),
                        pred_aspect=float(aspect(det_rb[j])[0]),
                        axis_error_deg=float(
                            axis_error_deg(long_axis_deg(rb), long_axis_deg(det_rb[j]))[0]
                        ),
                        rotated_iou=_rotated_iou(rb, det_rb[j]),
                    )
            records.append(rec)
    return records


def summarize_orientation(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts and medians of :func:`match_objects` records (None where nothing was found)."""
    found = [r for r in records if r["found"]]

    def med(key: str, rs: Sequence[dict[str, Any]] = found) -> float | None:
        return round(float(np.median([r[key] for r in rs])), 3) if rs else None

    err = np.array([r["axis_error_deg"] for r in found], np.float64)
    return {
        "elongated_objects": len(records),
        "found_horizontally": len(found),
        "median_axis_error_deg": med("axis_error_deg"),
        "share_within_10_deg": round(float(np.mean(err <= 10)), 3) if len(err) else None,
        "share_beyond_60_deg": round(float(np.mean(err > 60)), 3) if len(err) else None,
        "median_gt_aspect": med("gt_aspect", records),
        "median_pred_aspect": med("pred_aspect"),
        "median_rotated_iou": med("rotated_iou"),
        "share_rotated_iou_50": round(float(np.mean([r["rotated_iou"] >= 0.5 for r in found])), 3)
        if found
        else None,
    }


def orientation_line(dataset: str, s: Mapping[str, Any]) -> str:
    """One readable line of :func:`summarize_orientation`."""
    if not s["found_horizontally"]:
        return (
            f"{dataset} orientation: 0 of {s['elongated_objects']} elongated objects found "
            "horizontally"
        )
    return (
        f"{dataset} orientation: {s['found_horizontally']} of {s['elongated_objects']} elongated "
        f"objects found horizontally (hbox IoU >= 0.5); median long-axis error "
        f"{s['median_axis_error_deg']:.0f}° ({100 * s['share_within_10_deg']:.0f}% within 10°), "
        f"aspect predicted {s['median_pred_aspect']:.1f} vs true {s['median_gt_aspect']:.1f}, "
        f"rotated IoU >= 0.5 for {100 * s['share_rotated_iou_50']:.0f}%"
    )


def plot_orientation(per_dataset: Mapping[str, Sequence[dict[str, Any]]], target: Path) -> Path:
    """Per oriented dataset: long-axis error against the true axis angle, coloured by rotated IoU,
    and the predicted against the true aspect ratio."""
    from babelrs_core.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    names = list(per_dataset) or ["(none)"]
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        found = [r for r in per_dataset.get(name, []) if r["found"]]
        ax = row[0]
        if found:
            sc = ax.scatter(
                [r["gt_axis_deg"] for r in found],
                [r["axis_error_deg"] for r in found],
                c=[r["rotated_iou"] for r in found],
                cmap="viridis",
                vmin=0,
                vmax=1,
                s=18,
            )
            fig.colorbar(sc, ax=ax, label="rotated IoU")
        ax.set(
            xlim=(0, 180),
            ylim=(0, 90),
            xlabel="true long-axis angle (°)",
            ylabel="long-axis error (°)",
            title=f"{name}: found objects",
        )
        ax.grid(alpha=0.3)
        ax = row[1]
        if found:
            ax.scatter([r["gt_aspect"] for r in found], [r["pred_aspect"] for r in found], s=18)
            top = max(max(r["gt_aspect"] for r in found), max(r["pred_aspect"] for r in found))
            ax.plot([1, top], [1, top], color="grey", lw=1, ls="--")
        ax.set(
            xlabel="true aspect (long / short)",
            ylabel="predicted aspect",
            title=f"{name}: aspect ratio",
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, target)
