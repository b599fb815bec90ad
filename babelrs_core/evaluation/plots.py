"""Evaluation plots: precision-recall curves (PNG + DVC plot data) and predictions drawn on images.

DVC ``plots`` data are CSV files with a header (``recall,precision``), one file per dataset, so that
``dvc plots show`` draws one line per file and revision; the PNGs are for people without DVC (DVC's
HTML plots load their charting script from a CDN).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from babelrs_core.evaluation.metrics import RECALL_POINTS, DatasetScore
from babelrs_core.io.atomic import atomic_path

GT_COLOR = (40, 220, 60)
PRED_COLOR = (255, 60, 40)


def write_pr_csv(score: DatasetScore, target: str | os.PathLike[str]) -> Path:
    """Class-mean precision-recall curve at IoU 0.5 as ``recall,precision`` CSV rows."""
    target = Path(target)
    with atomic_path(target, suffix=".csv") as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["recall", "precision"])
        for r, p in zip(RECALL_POINTS, score.pr_mean(), strict=True):
            w.writerow([round(float(r), 4), round(float(p), 6)])
    return target


def write_pr_classes_csv(scores: Sequence[DatasetScore], target: str | os.PathLike[str]) -> Path:
    """Every class's curve in long form: ``dataset,class,recall,precision``."""
    target = Path(target)
    with atomic_path(target, suffix=".csv") as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "class", "recall", "precision"])
        for s in scores:
            for c in s.scored:
                for r, p in zip(RECALL_POINTS, c.pr50, strict=True):
                    w.writerow([s.name, c.name, round(float(r), 4), round(float(p), 6)])
    return target


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, target: str | os.PathLike[str], dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG atomically (temp file, then rename) and close it."""
    target = Path(target)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return target


def plot_pr_curves(scores: Sequence[DatasetScore], target: str | os.PathLike[str]) -> Path:
    """One panel per dataset: per-class PR curves at IoU 0.5 (thin) and the class mean (thick)."""
    plt = pyplot()
    n = max(len(scores), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    for ax, s in zip(axes[0], scores, strict=False):
        for c in s.scored:
            ax.plot(RECALL_POINTS, c.pr50, lw=1, alpha=0.7, label=f"{c.name} ({c.ap50:.1f})")
        ax.plot(RECALL_POINTS, s.pr_mean(), lw=2.5, color="black", label=f"mean ({s.ap50:.1f})")
        ax.set_title(f"{s.name}: AP@50 {s.ap50:.1f}, mAP {s.map:.1f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision (IoU 0.5)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, target)


def draw_detections(
    image: np.ndarray,
    gt: Sequence[dict[str, Any]],
    preds: Sequence[dict[str, Any]],
    score_thr: float = 0.3,
) -> Image.Image:
    """Ground truth (green) and predictions above ``score_thr`` (red, with class and score);
    oriented boxes (``poly`` / ``polygon``) are drawn as polygons."""
    im = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(im)
    for g in gt:
        if g.get("poly") is not None:
            draw.polygon([float(v) for v in g["poly"]], outline=GT_COLOR, width=1)
        else:
            draw.rectangle([float(v) for v in g["bbox"]], outline=GT_COLOR, width=1)
    for p in preds:
        if p["score"] < score_thr:
            continue
        if p.get("polygon") is not None:
            draw.polygon([float(v) for v in p["polygon"]], outline=PRED_COLOR, width=2)
        else:
            draw.rectangle([p["x1"], p["y1"], p["x2"], p["y2"]], outline=PRED_COLOR, width=2)
        draw.text(
            (p["x1"] + 2, max(p["y1"] - 11, 0)),
            f"{p['class_name']} {p['score']:.2f}",
            fill=PRED_COLOR,
        )
    return im


def mosaic(tiles: Sequence[Image.Image], title: str, tile_px: int = 256) -> Image.Image:
    """Tiles in one row (each scaled to ``tile_px`` high) under a one-line title."""
    scaled = [t.resize((max(1, round(t.width * tile_px / t.height)), tile_px)) for t in tiles]
    width = sum(t.width for t in scaled) + 4 * (len(scaled) + 1) if scaled else 200
    out = Image.new("RGB", (max(width, 200), tile_px + 24), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((4, 4), title, fill=(0, 0, 0))
    x = 4
    for t in scaled:
        out.paste(t, (x, 20))
        x += t.width + 4
    return out


def save_png(image: Image.Image, target: str | os.PathLike[str]) -> Path:
    target = Path(target)
    with atomic_path(target, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return target


def plot_training_curves(
    history: Sequence[dict[str, Any]],
    target: str | os.PathLike[str],
    title: str,
    x_key: str = "step",
) -> Path:
    """Loss curves (total thick, the parts thin) and the learning rate of a training log
    (``metrics.jsonl`` lines) as one PNG: two panels sharing the x axis, non-finite points
    left out."""
    plt = pyplot()
    xs = [float(r[x_key]) for r in history if isinstance(r.get(x_key), int | float)]
    rows = [r for r in history if isinstance(r.get(x_key), int | float)]
    keys = sorted({k for r in rows for k in r if "loss" in k and k != "loss" and "scale" not in k})

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [
            (float(r[x_key]), float(r[key]))
            for r in rows
            if isinstance(r.get(key), int | float) and np.isfinite(float(r[key]))
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_loss, ax_lr) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for key in keys[:12]:
        ax_loss.plot(*series(key), lw=1, alpha=0.75, label=key)
    ax_loss.plot(*series("loss"), lw=2.2, color="black", label="loss")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title(f"{title} ({len(xs)} points)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=7, loc="upper right")
    ax_lr.plot(*series("lr"), lw=1.5, color="tab:blue")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel(x_key)
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, target)
