"""The ablation's gradient PNGs: pre-clip gradient norm per iteration and per-modality gradient
cosine on the shared encoder, one pair per precision and mode (:func:`write_plots`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babelrs_core.ablation.rows import RunRow
from babelrs_core.evaluation.plots import pyplot, save_figure
from babelrs_core.evaluation.results_section import SHORT


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(statistics.fmean(acc))
    return out


def plot_grad_norms(rows: Sequence[RunRow], target: Path, title: str) -> Path:
    """Pre-clip gradient norm per iteration: one colour per variant, one line per seed (raw thin,
    moving mean of 10 thick), non-finite steps marked x on the axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = _colors(rows)
    for r in rows:
        pts = [(i, v) for i, v in r["grad_norm"] if v is not None and math.isfinite(v) and v > 0]
        if not pts:
            continue
        its, vals = zip(*pts, strict=True)
        c = colors[r["variant"]]
        ax.plot(its, vals, lw=0.5, alpha=0.3, color=c)
        lbl = f"{r['variant']} seed {r['seed']}"
        first_seed = min(x["seed"] for x in rows if x["variant"] == r["variant"])
        ls = "-" if r["seed"] == first_seed else ":"
        ax.plot(its, _smooth(vals, 10), lw=1.8, color=c, ls=ls, label=lbl)
        bad = [i for i, v in r["grad_norm"] if v is None]
        if bad:
            ax.plot(bad, [min(vals)] * len(bad), "x", color=c, ms=6)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("gradient norm (pre-clip)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, target)


def plot_grad_cosines(rows: Sequence[RunRow], target: Path, title: str) -> Path:
    """Cosine of per-modality gradients on the shared encoder: one panel per modality pair, one
    line per variant (mean over seeds at each measured iteration)."""
    plt = pyplot()
    pairs = sorted({p for r in rows for p in r["gradcos"]})
    n = max(len(pairs), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 3.8), squeeze=False)
    colors = _colors(rows)
    for ax, pair in zip(axes[0], pairs, strict=False):
        for variant in colors:
            by_iter: dict[int, list[float]] = {}
            for r in rows:
                if r["variant"] == variant:
                    for it, v in r["gradcos"].get(pair, []):
                        by_iter.setdefault(int(it), []).append(v)
            if by_iter:
                its = sorted(by_iter)
                ax.plot(
                    its,
                    [statistics.fmean(by_iter[i]) for i in its],
                    marker=".",
                    color=colors[variant],
                    label=variant,
                )
        ax.axhline(0, color="grey", lw=0.8)
        a, b = pair.split("~")
        ax.set_title(f"{SHORT.get(a, a)} vs {SHORT.get(b, b)}", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylim(-1, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gradient cosine (encoder)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, target)


def _colors(rows: Sequence[RunRow]) -> dict[str, Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    names = list(dict.fromkeys(r["variant"] for r in rows))
    return {v: cmap(i % 10) for i, v in enumerate(names)}


def write_plots(rows: Sequence[RunRow], folder: Path) -> list[Path]:
    """``grad_norm_<precision>[_probe].png`` and ``grad_cosine_<precision>[_probe].png``."""
    out = []
    for precision, mode in dict.fromkeys((r["precision"], r["mode"]) for r in rows):
        sel = [r for r in rows if (r["precision"], r["mode"]) == (precision, mode)]
        sel = [r for r in sel if r["grad_norm"]]
        if not sel:
            continue
        tag = precision + ("_probe" if mode == "probe" else "")
        what = f"{precision}" + (" (CPU probe)" if mode == "probe" else "")
        out.append(plot_grad_norms(sel, folder / f"grad_norm_{tag}.png", f"gradient norm, {what}"))
        if any(r["gradcos"] for r in sel):
            out.append(
                plot_grad_cosines(
                    sel, folder / f"grad_cosine_{tag}.png", f"per-modality gradient cosine, {what}"
                )
            )
    return out
