"""The label-efficiency table and plot: ``ablation.label_dataset``'s mAP / AP@50 against the
fraction of its training labels, per variant of ``ablation.label_variants`` (mean +- spread over
seeds), from the runs' ``eval/metrics/eval.json``.

The fraction 1.0 is the variant's own runs (the first precision it runs in full), the others
the plan's label-efficiency runs (``Plan.label_runs``). :func:`label_efficiency_rows` is what
``ablation_run.json`` holds under ``label_efficiency``; :func:`plot_label_efficiency` draws it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypedDict

from babelrs_core.ablation.plan import FinetuneJob, Plan
from babelrs_core.ablation.rows import spread_of
from babelrs_core.io.markdown import table_head, table_row

Metric = Literal["map", "ap50"]


class Stats(TypedDict):
    """One metric over the seeds of a (variant, fraction)."""

    values: dict[str, float]  # seed (as text: JSON keys) -> score
    mean: float | None
    spread: float | None  # ablation.spread; None with fewer than two seeds


class LabelRow(TypedDict):
    """One (variant, label fraction) of :func:`label_efficiency_rows`."""

    variant: str
    label: str
    dataset: str
    fraction: float
    precision: str
    runs: int  # planned
    map: Stats
    ap50: Stats
    seeds: list[int]  # evaluated
    out: list[str]  # the runs' folders


def _score(job: FinetuneJob, dataset: str, key: str) -> float | None:
    """``eval.json`` ``<dataset>.<key>`` of a finished run (None: not evaluated)."""
    path = job.eval_dir / "metrics" / "eval.json"
    if not path.exists():
        return None
    node = json.loads(path.read_text()).get(dataset) or {}
    value = node.get(key) if isinstance(node, dict) else None
    return float(value) if isinstance(value, int | float) else None


def label_efficiency_rows(plan: Plan) -> list[LabelRow]:
    """One row per (variant, fraction), variants in ``label_variants`` order, fractions rising:
    ``variant``, ``label``, ``dataset``, ``fraction``, ``precision``, ``runs`` (planned),
    ``seeds`` (evaluated), per metric (``map``, ``ap50``) the per-seed ``values``, ``mean`` and
    ``spread`` (``ablation.spread``; None with fewer than two seeds), and ``out`` (the folders)."""
    ab = plan.params.ablation
    ds = ab.label_dataset
    rows = []
    for variant in ab.label_variants:
        own = [j for j in plan.finetunes if j.variant == variant and j.mode == "full"]
        if not own:
            continue
        precision = own[0].precision
        for fraction in sorted(ab.label_fractions):
            if fraction >= 1:  # the variant's own runs, of the seeds every fraction has
                run_seeds = ab.label_run_seeds
                jobs = [j for j in own if j.precision == precision and j.seed in run_seeds]
            else:
                jobs = [
                    j
                    for j in plan.label_runs
                    if j.variant == variant and j.label_fraction == fraction
                ]
            seeds: set[int] = set()
            stats: dict[Metric, Stats] = {}
            for key in ("map", "ap50"):
                vals = {j.seed: v for j in jobs if (v := _score(j, ds, key)) is not None}
                seeds |= set(vals)
                xs = list(vals.values())
                stats[key] = {
                    "values": {str(s): v for s, v in sorted(vals.items())},
                    "mean": statistics.fmean(xs) if xs else None,
                    "spread": spread_of(xs, ab.spread) if len(xs) > 1 else None,
                }
            row: LabelRow = {
                "variant": variant,
                "label": ab.variants[variant].label,
                "dataset": ds,
                "fraction": fraction,
                "precision": precision,
                "runs": len(jobs),
                "map": stats["map"],
                "ap50": stats["ap50"],
                "seeds": sorted(seeds),
                "out": [str(j.out) for j in jobs],
            }
            rows.append(row)
    return rows


def plot_label_efficiency(
    rows: Sequence[LabelRow], path: Path, metric: Metric = "map"
) -> Path | None:
    """``metric`` (``map`` | ``ap50``) against the label fraction (log x axis), one line per
    variant with its seed spread as error bars; None (nothing written) without any score."""
    from babelrs_core.evaluation.plots import pyplot, save_figure

    scored = [r for r in rows if r[metric]["mean"] is not None]
    if not scored:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for variant in dict.fromkeys(r["variant"] for r in scored):
        rs = [r for r in scored if r["variant"] == variant]
        ax.errorbar(
            [r["fraction"] for r in rs],
            [r[metric]["mean"] for r in rs],
            yerr=[r[metric]["spread"] or 0.0 for r in rs],
            marker="o",
            capsize=3,
            label=rs[0]["label"],
        )
    fractions = sorted({r["fraction"] for r in scored})
    ax.set_xscale("log")
    ax.set_xticks(fractions)
    ax.set_xticklabels([f"{f:.0%}" for f in fractions])
    name = {"map": "mAP", "ap50": "AP@50"}[metric]
    ax.set_xlabel(f"share of {scored[0]['dataset']} training images")
    ax.set_ylabel(f"{scored[0]['dataset']} {name}")
    ax.set_title("Label efficiency (mean ± seed spread)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def label_efficiency_table(rows: Sequence[LabelRow], metric: Metric = "map") -> str:
    """Markdown: one row per variant, one column per label fraction, ``mean ± spread`` (or ``–``
    where no run has been scored)."""
    if not rows:
        return ""
    fractions = sorted({r["fraction"] for r in rows})
    name = {"map": "mAP", "ap50": "AP@50"}[metric]
    title = f"{rows[0]['dataset']} {name} vs share of its training labels"
    lines = table_head([title, *(f"{f:.0%}" for f in fractions)])
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for f in fractions:
            found = [r for r in rows if r["variant"] == variant and r["fraction"] == f]
            m: Stats = found[0][metric] if found else {"values": {}, "mean": None, "spread": None}
            if m["mean"] is None:
                cells.append("–")
            elif m["spread"] is None:
                cells.append(f"{m['mean']:.2f}")
            else:
                cells.append(f"{m['mean']:.2f} ± {m['spread']:.2f}")
        label = next(r["label"] for r in rows if r["variant"] == variant)
        lines.append(table_row([label, *cells]))
    return "\n".join(lines)
