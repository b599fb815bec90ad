"""The ablation report: rows read back from the run folders, mean +- spread over seeds, the
ordering statement, gradient PNGs, and the generated "Ablation" section of ``docs/results.md``.

Everything here reads files written by the runs (``metrics.jsonl``, ``train.json``, ``run.json``,
``metrics/eval.json``, ``eval/predictions/``), so ``babelrs ablation report`` regenerates the
section from the outputs alone. Spread over seeds: ``half_range`` = (max - min) / 2 (with two
seeds: half their distance), or ``std`` = sample standard deviation (ddof 1). The claims (every
variant against ``ours``) rest on paired bootstrap intervals over the evaluation images
(:mod:`babelrs_core.ablation.claims`), not on the mean +- spread ordering, which is kept as a
description of the means.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babelrs_core.ablation.claims import claim_statements, claims_markdown, compute_claims
from babelrs_core.ablation.label_efficiency import (
    label_efficiency_rows,
    label_efficiency_table,
    plot_label_efficiency,
)
from babelrs_core.ablation.plan import FinetuneJob, Plan
from babelrs_core.concepts import DATASETS
from babelrs_core.evaluation.plots import pyplot, save_figure
from babelrs_core.evaluation.results_section import SHORT
from babelrs_core.io.atomic import write_json

SECTION = "## Ablation"
METRIC_KEYS = [f"{d}.{m}" for d in DATASETS for m in ("ap50", "map")] + [
    "overall.ap50",
    "overall.map",
    "overall.hmap",
]
METRIC_NAMES = {"hmap": "H-mAP", "map": "overall mAP", "ap50": "overall AP@50"}
RUN_JSON = "ablation_run.json"


# -- rows: one per fine-tuning run, from its files ------------------------------------------------


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def first_nonfinite(history: Sequence[dict[str, Any]]) -> int | None:
    """The first logged iteration whose cumulative ``nonfinite_steps`` is above 0 (exact when every
    iteration is logged, else the end of the window that held it)."""
    return next((int(h["iter"]) for h in history if (h.get("nonfinite_steps") or 0) > 0), None)


def cosine_curves(history: Sequence[dict[str, Any]], every: int) -> dict[str, list[list[float]]]:
    """Per modality pair, ``[iter, cosine]`` at the iterations where it was measured."""
    out: dict[str, list[list[float]]] = {}
    for h in history:
        it = int(h["iter"])
        if every <= 0 or not (it == 1 or it % every == 0):
            continue  # the hook repeats the latest cosine on every line; keep the measured ones
        for k, v in h.items():
            if k.startswith("gradcos.encoder.") and v is not None:
                out.setdefault(k.split(".", 2)[2], []).append([it, float(v)])
    return out


def collect_row(job: FinetuneJob, error: str | None = None) -> dict[str, Any]:
    """What the report needs of one run (``status`` ok | failed | missing)."""
    ft = job.finetune_dir
    history = _jsonl(ft / "metrics.jsonl")
    train = _json(ft / "train.json")
    run = _json(ft / "run.json")
    ev = _json(job.eval_dir / "metrics" / "eval.json") if job.mode == "full" else {}
    done = bool(train) and train.get("iters") == job.params.finetune.iters
    status = "failed" if error else ("ok" if done and (ev or job.mode == "probe") else "missing")
    every = int(run.get("finetune", {}).get("grad_cosine_every", 0) or 0)
    timed = history[1:] or history  # the first window pays the start-up
    cpu = [h["cpu_s_per_iter"] for h in timed if h.get("cpu_s_per_iter") is not None]
    wall = [h["s_per_iter"] for h in timed if h.get("s_per_iter") is not None]
    scales = [h["loss_scale"] for h in history if h.get("loss_scale") is not None]
    return {
        "variant": job.variant,
        "label": job.label,
        "precision": job.precision,
        "seed": job.seed,
        "mode": job.mode,
        "init": job.params.finetune.init,
        "iters": job.params.finetune.iters,
        "status": status,
        "error": error,
        "eval": ev or None,
        "nonfinite_steps": int(history[-1].get("nonfinite_steps") or 0) if history else None,
        "first_nonfinite": first_nonfinite(history),
        "s_per_iter": statistics.fmean(wall) if wall else None,
        "cpu_s_per_iter": statistics.fmean(cpu) if cpu else None,
        "loss_scale_final": scales[-1] if scales else None,
        "final_loss": next(
            (h["loss"] for h in reversed(history) if h.get("loss") is not None), None
        ),
        "grad_norm": [[int(h["iter"]), h.get("grad_norm")] for h in history],
        "gradcos": cosine_curves(history, every),
        "train_s": (train.get("timing") or {}).get("train_s"),
    }


def metric(ev: dict[str, Any] | None, key: str) -> float | None:
    """``eval.json`` value at ``dataset.metric`` (None when absent)."""
    node: Any = ev or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


# -- aggregation ----------------------------------------------------------------------------------


def spread_of(values: Sequence[float], kind: str = "half_range") -> float:
    """Half-range ((max - min) / 2) or sample std of ``values`` (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    if kind == "half_range":
        return (max(values) - min(values)) / 2
    if kind == "std":
        return statistics.stdev(values)
    raise ValueError(f"spread {kind!r}: expected half_range | std")


def aggregate(rows: Sequence[dict[str, Any]], spread: str = "half_range") -> list[dict[str, Any]]:
    """One group per (variant, precision, mode), in row order: n, mean / spread per metric, the
    non-finite steps over seeds (sum, earliest first step) and the mean seconds per iteration."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["precision"], r["mode"]), []).append(r)
    out = []
    for (variant, precision, mode), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        g: dict[str, Any] = {
            "variant": variant,
            "label": rs[0]["label"],
            "precision": precision,
            "mode": mode,
            "seeds": [r["seed"] for r in ok],
            "runs": len(rs),
            "failed": [r["seed"] for r in rs if r["status"] != "ok"],
            "mean": {},
            "spread": {},
        }
        for key in METRIC_KEYS:
            vals = [v for r in ok if (v := metric(r["eval"], key)) is not None]
            if vals:
                g["mean"][key] = statistics.fmean(vals)
                g["spread"][key] = spread_of(vals, spread)
        nf = [r["nonfinite_steps"] for r in ok if r["nonfinite_steps"] is not None]
        firsts = [r["first_nonfinite"] for r in ok if r["first_nonfinite"] is not None]
        g["nonfinite_steps"] = sum(nf) if nf else None
        g["first_nonfinite"] = min(firsts) if firsts else None
        for k in ("s_per_iter", "cpu_s_per_iter", "loss_scale_final"):
            vals = [r[k] for r in ok if r.get(k) is not None]
            g[k] = statistics.fmean(vals) if vals else None
        out.append(g)
    return out


def ordering(
    groups: Sequence[dict[str, Any]],
    expected: Sequence[str],
    metric_name: str = "hmap",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Did the expected ordering (best first) hold for ``overall.<metric_name>`` at ``precision``?

    ``held``: every adjacent pair of ``expected`` that was measured keeps its order and every
    expected variant was measured. Each flipped adjacent pair records the gap and whether it
    exceeds the two variants' seed spreads added (``beyond_spread``); ``clear``: held and every
    adjacent gap exceeds the spreads. ``concordant``: pairs (any distance) in the expected order.
    """
    key = f"overall.{metric_name}"
    scores = {
        g["variant"]: (g["mean"][key], g["spread"][key])
        for g in groups
        if g["precision"] == precision and g["mode"] == "full" and key in g["mean"]
    }
    present = [v for v in expected if v in scores]
    pairs = []
    for a, b in itertools.pairwise(present):
        (ma, sa), (mb, sb) = scores[a], scores[b]
        pairs.append(
            {
                "better": a,
                "worse": b,
                "gap": ma - mb,
                "spread": sa + sb,
                "kept": ma > mb,
                "beyond_spread": abs(ma - mb) > sa + sb,
            }
        )
    concordant = sum(
        scores[a][0] > scores[b][0] for i, a in enumerate(present) for b in present[i + 1 :]
    )
    total = len(present) * (len(present) - 1) // 2
    missing = [v for v in expected if v not in scores]
    held = bool(present) and not missing and all(p["kept"] for p in pairs)
    return {
        "precision": precision,
        "metric": key,
        "expected": list(expected),
        "measured": sorted(scores, key=lambda v: -scores[v][0]),
        "scores": {v: {"mean": m, "spread": s} for v, (m, s) in scores.items()},
        "pairs": pairs,
        "held": held,
        "clear": held and all(p["beyond_spread"] for p in pairs),
        "concordant": concordant,
        "total_pairs": total,
        "missing": missing,
    }


def statement(order: dict[str, Any], spread: str = "half_range") -> str:
    """The plain sentence(s) of an :func:`ordering` result."""
    name = METRIC_NAMES.get(order["metric"].split(".")[-1], order["metric"])
    sc = order["scores"]
    if not sc:
        return f"{order['precision']}: no evaluated runs, so the ordering cannot be checked."
    exp = " > ".join(order["expected"])
    ms = order["measured"]
    got = f"{ms[0]} {sc[ms[0]]['mean']:.2f}" + "".join(
        (" = " if sc[b]["mean"] == sc[a]["mean"] else " > ") + f"{b} {sc[b]['mean']:.2f}"
        for a, b in itertools.pairwise(ms)
    )
    text = (
        f"**{order['precision']}, {name}** (mean ± {spread.replace('_', '-')} over seeds). "
        f"Expected (paper): {exp}. Measured: {got}. "
    )
    if order["missing"]:
        text += f"Not measured: {', '.join(order['missing'])}. "
    # adjacent pairs in the expected order whose gap the seed spreads could explain
    noisy = "; ".join(
        f"{p['better']} − {p['worse']} = {p['gap']:+.2f} vs spread {p['spread']:.2f}"
        for p in order["pairs"]
        if p["kept"] and not p["beyond_spread"]
    )
    if order["held"]:
        text += "**The paper's ordering held here**"
        text += (
            ", and every adjacent gap exceeds the seed spreads."
            if order["clear"]
            else f", but not every adjacent gap exceeds the seed spreads: {noisy}."
        )
    else:
        flipped = [p for p in order["pairs"] if not p["kept"]]
        text += "**The paper's ordering did not hold here**"
        if flipped:
            text += ": adjacent pairs out of order " + "; ".join(
                f"{p['better']} − {p['worse']} = {p['gap']:+.2f} ("
                + ("tied" if p["gap"] == 0 else "flipped")
                + (", beyond" if p["beyond_spread"] else ", within")
                + f" the seed spread {p['spread']:.2f})"
                for p in flipped
            )
        text += "."
        if noisy:
            text += f" Adjacent pairs in the expected order but within the seed spread: {noisy}."
    text += (
        f" {order['concordant']} of {order['total_pairs']} variant pairs are in the expected order."
    )
    return text


def brief(order: dict[str, Any]) -> str:
    """One line for a secondary metric: the measured order, whether the expected one held, and
    how many variant pairs agree with it."""
    name = METRIC_NAMES.get(order["metric"].split(".")[-1], order["metric"])
    sc = order["scores"]
    if not sc:
        return f"{name}: no evaluated runs"
    got = " > ".join(f"{v} {sc[v]['mean']:.2f}" for v in order["measured"])
    verdict = (
        "did not hold"
        if not order["held"]
        else "held" + (" beyond the spreads" if order["clear"] else "")
    )
    return (
        f"{name}: {got} (the expected ordering {verdict}; {order['concordant']} of "
        f"{order['total_pairs']} pairs in the expected order)"
    )


def bottleneck(groups: Sequence[dict[str, Any]], precision: str = "fp32") -> str | None:
    """H-mAP is at most len(datasets) x the lowest per-dataset mAP: name the dataset with the
    lowest mAP in each evaluated group (None when nothing was evaluated)."""
    lows: dict[str, list[tuple[str, float]]] = {}
    for g in groups:
        if g["precision"] != precision or g["mode"] != "full":
            continue
        per = {d: g["mean"][f"{d}.map"] for d in DATASETS if f"{d}.map" in g["mean"]}
        if per:
            d = min(per, key=lambda k: per[k])
            lows.setdefault(d, []).append((g["variant"], per[d]))
    if not lows:
        return None
    ranges = {
        d: f"mAP {min(v for _, v in vs):.2f}–{max(v for _, v in vs):.2f}" for d, vs in lows.items()
    }
    text = (
        "H-mAP, the harmonic mean of the per-dataset mAPs, is at most "
        f"{len(DATASETS)} × the lowest of them. At {precision} the lowest-mAP dataset is "
    )
    if len(lows) == 1:
        (d,) = lows
        name = SHORT.get(d, d)
        return text + (
            f"{name} in every variant ({ranges[d]}), so the H-mAP ordering mostly follows "
            f"{name}'s mAP."
        )
    return (
        text
        + "; ".join(
            f"{SHORT.get(d, d)} in {len(vs)} variant(s) ({ranges[d]})" for d, vs in lows.items()
        )
        + "."
    )


# -- plots ----------------------------------------------------------------------------------------


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(statistics.fmean(acc))
    return out


def plot_grad_norms(rows: Sequence[dict[str, Any]], target: Path, title: str) -> Path:
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


def plot_grad_cosines(rows: Sequence[dict[str, Any]], target: Path, title: str) -> Path:
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


def _colors(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    names = list(dict.fromkeys(r["variant"] for r in rows))
    return {v: cmap(i % 10) for i, v in enumerate(names)}


def write_plots(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
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


# -- the markdown section -------------------------------------------------------------------------


def _pm(g: dict[str, Any], key: str) -> str:
    if key not in g["mean"]:
        return "–"
    return f"{g['mean'][key]:.2f} ± {g['spread'][key]:.2f}"


def _nonfinite(g: dict[str, Any]) -> str:
    if g["nonfinite_steps"] is None:
        return "–"
    if not g["nonfinite_steps"]:
        return "0"
    return f"{g['nonfinite_steps']} (first: iter {g['first_nonfinite']})"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def scores_table(groups: Sequence[dict[str, Any]]) -> str:
    head = ["variant", "precision", "seeds"]
    for d in DATASETS:
        head += [f"{SHORT[d]} AP@50", f"{SHORT[d]} mAP"]
    head += ["Overall AP@50", "Overall mAP", "H-mAP", "non-finite steps", "s/iter (CPU s/iter)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---" + "|---:" * (len(head) - 3) + "|"]
    for g in groups:
        if g["mode"] != "full":
            continue
        seeds = ", ".join(str(s) for s in g["seeds"]) or "–"
        if g["failed"]:
            seeds += f" (failed: {', '.join(str(s) for s in g['failed'])})"
        cells = [f"{g['label']} (`{g['variant']}`)", g["precision"], seeds]
        cells += [_pm(g, k) for k in METRIC_KEYS[:-1]] + [f"**{_pm(g, 'overall.hmap')}**"]
        cells += [_nonfinite(g), f"{_num(g['s_per_iter'])} ({_num(g['cpu_s_per_iter'])})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def probe_table(groups: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> str:
    probes = [g for g in groups if g["mode"] == "probe"]
    if not probes:
        return ""
    ref = {
        g["variant"]: g["cpu_s_per_iter"]
        for g in groups
        if g["mode"] == "full" and g["precision"] == "fp32"
    }
    lines = [
        "| variant | precision | iterations | s/iter | CPU s/iter | fp32 CPU s/iter | × fp32 "
        "| non-finite steps | final loss scale | final loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in probes:
        r = next(
            x
            for x in rows
            if (x["variant"], x["precision"], x["mode"]) == (g["variant"], g["precision"], "probe")
        )
        base = ref.get(g["variant"])
        ratio = f"{g['cpu_s_per_iter'] / base:.1f}×" if base and g["cpu_s_per_iter"] else "–"
        status = "" if r["status"] == "ok" else f" ({r['status']})"
        lines.append(
            f"| {g['label']} (`{g['variant']}`){status} | {g['precision']} | {r['iters']} "
            f"| {_num(g['s_per_iter'])} | {_num(g['cpu_s_per_iter'])} | {_num(base)} | {ratio} "
            f"| {_nonfinite(g)} | {_num(g['loss_scale_final'], '.0f')} "
            f"| {_num(r['final_loss'])} |"
        )
    return "\n".join(lines)


def pretrain_table(pretrains: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| pretraining | used by | steps | LVSA mode | τ | final loss | train s | non-finite |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for p in pretrains:
        lines.append(
            f"| `{p['name']}` | {', '.join(p['variants'])} | {p.get('steps', '–')} "
            f"| {p.get('mode', '–')} | {p.get('tau', '–')} | {_num(p.get('final_loss'))} "
            f"| {_num(p.get('train_s'), '.0f')} | {p.get('nonfinite_steps', '–')} |"
        )
    return "\n".join(lines)


def section(
    params: Any,
    groups: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    orders: Sequence[dict[str, Any]],
    pretrains: Sequence[dict[str, Any]],
    skipped: Sequence[dict[str, str]],
    plots: Sequence[Path],
    results_md: Path,
    run_info: dict[str, Any],
    claims: Sequence[dict[str, Any]] = (),
    label_rows: Sequence[dict[str, Any]] = (),
) -> str:
    """The whole generated "Ablation" section (``claims``: per precision, from
    :func:`~babelrs_core.ablation.claims.compute_claims`)."""
    ab = params.ablation
    ft = params.finetune
    spread = "half-range (max − min) / 2" if ab.spread == "half_range" else "sample std (ddof 1)"
    variants = "; ".join(
        f"`{n}` = {v.label} (init {v.init}"
        + (
            ", pretrain " + ", ".join(f"{k}={val}" for k, val in v.pretrain.items())
            if v.pretrain
            else ""
        )
        + ")"
        for n, v in ab.variants.items()
    )
    parts = [
        SECTION,
        "",
        "<!-- generated by babelrs_core.ablation.report (babelrs ablation run / report); "
        "do not edit -->",
        "",
        f"The shared detector fine-tuned on SOI-mini from different encoder starts: {variants}. "
        f"Every run has the same fine-tuning compute: {ab.iters} iterations, batch "
        f"{ft.batch_size}, lr {ft.lr:g}, the same schedule, data and heads; only the encoder's "
        f"starting weights, the precision and the seed differ. Seeds {list(ab.seeds)} "
        f"(fine-tuning; the pretraining runs use seed "
        f"{params.seed if ab.pretrain_seed is None else ab.pretrain_seed}). Scores in percent "
        f"on each dataset's SOI-Det evaluation split, **mean ± spread over seeds, spread = "
        f"{spread}**. Non-finite steps: steps whose loss or gradient was not finite and were "
        "skipped (summed over seeds; first = earliest iteration in any seed; under fp16 the "
        "dynamic loss scaler's overflow steps count too).",
        "",
        scores_table(groups),
        "",
    ]
    by_precision = {c["precision"]: c for c in claims}
    for order in orders:
        claim = by_precision.get(order["precision"])
        if claim is not None:
            parts += [claims_markdown(claim), ""]
        means = [
            brief(ordering(groups, ab.expected_order, m, order["precision"]))
            for m in [ab.order_metric] + [m for m in METRIC_NAMES if m != ab.order_metric]
        ]
        parts += [
            f"The means over seeds ({order['precision']}; a description, not the basis of the "
            "claims): " + "; ".join(means) + ".",
            "",
        ]
        if ab.order_metric == "hmap" and (note := bottleneck(groups, order["precision"])):
            parts += [note, ""]
    probe = probe_table(groups, rows)
    if probe:
        parts += [
            "fp16 on CPU: autocast to float16 on a CPU device runs, but PyTorch's CPU float16 "
            f"kernels are slow, so (`ablation.cpu_fp16: {ab.cpu_fp16}`) each variant ran "
            f"{ab.probe_iters} fp16 iterations of seed {ab.seeds[0]} without evaluation: what "
            "they measure is speed and numerical behaviour (non-finite steps, loss scale), not "
            "accuracy. The fp16 rows of the plan run in full on a GPU (`finetune.device: cuda`).",
            "",
            probe,
            "",
        ]
    if skipped:
        parts += [
            "Not run: "
            + "; ".join(f"{s['variant']} {s['precision']} ({s['reason']})" for s in skipped)
            + ".",
            "",
        ]
    if pretrains:
        parts += [
            "Pretraining runs (CSIA, one per distinct pretraining params):",
            "",
            pretrain_table(pretrains),
            "",
        ]
    if label_rows:
        parts += [
            f"Label efficiency: the {ab.label_dataset} head trained on a seeded, nested share of "
            "its training images (the other datasets in full; `finetune.label_fraction`), same "
            f"iterations, mean ± spread over seeds ({label_rows[0]['precision']}):",
            "",
            label_efficiency_table(label_rows),
            "",
        ]
    rel = Path(os.path.relpath(Path(ab.plots_dir), results_md.parent))
    for p in plots:
        parts += [f"![{p.stem}]({(rel / p.name).as_posix()})", ""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        parts += [
            "Runs without results: "
            + "; ".join(
                f"{r['variant']}/{r['precision']}/seed{r['seed']}: {r['status']}"
                + (f" ({r['error']})" if r["error"] else "")
                for r in failed
            )
            + ".",
            "",
        ]
    if run_info:
        parts += [
            f"Last `babelrs ablation run`: {run_info.get('finished', '?')}, device "
            f"{run_info.get('device')}, {run_info.get('workers')} runs at once × "
            f"{run_info.get('threads')} torch thread(s) on {run_info.get('cpus')} CPU cores, "
            f"{_num(run_info.get('wall_s'), '.0f')} s wall in all ("
            f"{run_info.get('ran', 0)} runs trained, {run_info.get('reused', 0)} reused from "
            "earlier runs). MLflow: parent run `babelrs-ablation` "
            f"(`{run_info.get('mlflow_parent_run_id') or 'not tracked'}`) with one child run per "
            "pretraining and fine-tuning run.",
            "",
        ]
    ft_s = sum(r["train_s"] or 0 for r in rows)
    pt_s = sum(p.get("total_s") or 0 for p in pretrains)
    parts += [
        f"Compute in the outputs (sum over runs, reused or not): {ft_s:.0f} s of fine-tuning "
        f"loops over {len(rows)} runs and {pt_s:.0f} s of pretraining (training + held-out "
        f"evaluation) over {len(pretrains)} runs.",
        "",
    ]
    parts += ["Reproduce:", "", "```", "make ablation   # = babelrs ablation run", "```", ""]
    return "\n".join(parts)


def pretrain_info(plan: Plan) -> list[dict[str, Any]]:
    """Rows of the pretraining table, from each run's ``metrics.jsonl`` / ``metrics.json``."""
    out = []
    for job in plan.pretrains:
        hist = (
            [
                json.loads(x)
                for x in (job.out / "metrics.jsonl").read_text().splitlines()
                if x.strip()
            ]
            if (job.out / "metrics.jsonl").exists()
            else []
        )
        m = _json(job.out / "metrics.json")
        cfg = job.params.pretrain
        out.append(
            {
                "name": job.name,
                "variants": list(job.variants),
                "steps": cfg.steps,
                "mode": cfg.lvsa.mode,
                "tau": cfg.lvsa.tau,
                "final_loss": hist[-1]["loss"] if hist else None,
                "nonfinite_steps": hist[-1].get("nonfinite_steps") if hist else None,
                "train_s": (m.get("timing") or {}).get("train_s"),
                "total_s": (m.get("timing") or {}).get("total_s"),
            }
        )
    return out


def write_report(
    plan: Plan, errors: dict[str, str] | None = None, run_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read every run of ``plan`` back, write ``summary.json``, the PNGs and the results section."""
    from babelrs_core.io.results_md import update_results_md

    params, ab = plan.params, plan.params.ablation
    errors = errors or {}
    rows = [collect_row(j, errors.get(j.key)) for j in plan.finetunes]
    groups = aggregate(rows, ab.spread)
    full = list(dict.fromkeys(g["precision"] for g in groups if g["mode"] == "full"))
    orders = [ordering(groups, ab.expected_order, ab.order_metric, p) for p in full]
    claims = [compute_claims(plan, rows, p) for p in full]
    plots = write_plots(rows, Path(ab.plots_dir))
    label_rows = label_efficiency_rows(plan)
    curve = plot_label_efficiency(label_rows, Path(ab.plots_dir) / "label_efficiency.png")
    plots += [curve] if curve is not None else []
    info = run_info if run_info is not None else _json(plan.root / RUN_JSON)
    pre = pretrain_info(plan)
    results_md = Path(ab.results_md)
    text = section(
        params, groups, rows, orders, pre, plan.skipped, plots, results_md, info, claims, label_rows
    )
    update_results_md(results_md, text, heading=SECTION)
    summary = {
        "groups": groups,
        "orderings": orders,
        "claims": claims,
        "statements": [s for c in claims for s in claim_statements(c)],
        "label_efficiency": label_rows,
        "pretraining": pre,
        "skipped": plan.skipped,
        "runs": [{k: v for k, v in r.items() if k not in ("grad_norm", "gradcos")} for r in rows],
        "plots": [str(p) for p in plots],
        "run": info,
    }
    write_json(plan.root / "summary.json", summary)
    return summary
