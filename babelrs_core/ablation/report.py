"""The ablation report: the generated "Ablation" section of ``docs/results.md`` (its markdown
tables and :func:`section`) and :func:`write_report`, which reads every run back
(:mod:`~babelrs_core.ablation.rows`), orders the means (:mod:`~babelrs_core.ablation.ordering`),
draws the PNGs (:mod:`~babelrs_core.ablation.plots`) and writes ``summary.json`` and the section.

Everything read comes from files written by the runs (``metrics.jsonl``, ``train.json``,
``run.json``, ``metrics/eval.json``, ``eval/predictions/``), so ``babelrs ablation report``
regenerates the section from the outputs alone. The claims (every variant against ``ours``) rest
on paired bootstrap intervals over the evaluation images (:mod:`babelrs_core.ablation.claims`),
not on the mean +- spread ordering, which is kept as a description of the means.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babelrs_core.ablation.claims import Claims, claim_statements, claims_markdown, compute_claims
from babelrs_core.ablation.label_efficiency import (
    LabelRow,
    label_efficiency_rows,
    label_efficiency_table,
    plot_label_efficiency,
)
from babelrs_core.ablation.ordering import METRIC_NAMES, Ordering, bottleneck, brief, ordering
from babelrs_core.ablation.plan import Plan
from babelrs_core.ablation.plots import write_plots
from babelrs_core.ablation.rows import (
    METRIC_KEYS,
    Group,
    PretrainRow,
    RunRow,
    aggregate,
    collect_row,
    pretrain_info,
    read_json,
)
from babelrs_core.concepts import DATASETS
from babelrs_core.evaluation.results_section import SHORT
from babelrs_core.io.atomic import write_json
from babelrs_core.io.markdown import table_head, table_row

RUN_JSON = "ablation_run.json"  # the run record, in ablation.report_dir
SUMMARY_JSON = "summary.json"  # what the report read and concluded, beside it


def heading(params: Any) -> str:
    """The markdown heading of the generated section (``ablation.section``)."""
    return f"## {params.ablation.section}"


def reproduce_command(params: Any) -> str:
    """The command that reruns this ablation (or study)."""
    study = params.ablation.study
    if study is None:
        return "make ablation   # = babelrs ablation run"
    return f"babelrs ablation run --study {study}"


# -- the markdown section -------------------------------------------------------------------------


def _pm(g: Group, key: str) -> str:
    if key not in g["mean"]:
        return "–"
    return f"{g['mean'][key]:.2f} ± {g['spread'][key]:.2f}"


def _nonfinite(g: Group) -> str:
    if g["nonfinite_steps"] is None:
        return "–"
    if not g["nonfinite_steps"]:
        return "0"
    return f"{g['nonfinite_steps']} (first: iter {g['first_nonfinite']})"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def scores_table(groups: Sequence[Group]) -> str:
    head = ["variant", "precision", "seeds"]
    for d in DATASETS:
        head += [f"{SHORT[d]} AP@50", f"{SHORT[d]} mAP"]
    head += ["Overall AP@50", "Overall mAP", "H-mAP", "non-finite steps", "s/iter (CPU s/iter)"]
    lines = table_head(head, "lllr")
    for g in groups:
        if g["mode"] != "full":
            continue
        seeds = ", ".join(str(s) for s in g["seeds"]) or "–"
        if g["failed"]:
            seeds += f" (failed: {', '.join(str(s) for s in g['failed'])})"
        cells = [f"{g['label']} (`{g['variant']}`)", g["precision"], seeds]
        cells += [_pm(g, k) for k in METRIC_KEYS[:-1]] + [f"**{_pm(g, 'overall.hmap')}**"]
        cells += [_nonfinite(g), f"{_num(g['s_per_iter'])} ({_num(g['cpu_s_per_iter'])})"]
        lines.append(table_row(cells))
    return "\n".join(lines)


def probe_table(groups: Sequence[Group], rows: Sequence[RunRow]) -> str:
    probes = [g for g in groups if g["mode"] == "probe"]
    if not probes:
        return ""
    ref = {
        g["variant"]: g["cpu_s_per_iter"]
        for g in groups
        if g["mode"] == "full" and g["precision"] == "fp32"
    }
    head = ["variant", "precision", "iterations", "s/iter", "CPU s/iter", "fp32 CPU s/iter"]
    head += ["× fp32", "non-finite steps", "final loss scale", "final loss"]
    lines = table_head(head, "llr")
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


def pretrain_table(pretrains: Sequence[PretrainRow]) -> str:
    head = ["pretraining", "used by", "steps", "image px", "LM frozen", "LVSA mode", "τ"]
    head += ["final loss", "held-out region acc. (majority)", "train s (CPU s)", "non-finite"]
    lines = table_head(head, "llrrllr")
    for p in pretrains:
        acc, base = p.get("region_accuracy"), p.get("region_majority")
        region = "–" if acc is None else f"{100 * acc:.1f} %"
        region += "" if base is None else f" ({100 * base:.1f} %)"
        lines.append(
            f"| `{p['name']}` | {', '.join(p['variants'])} | {p.get('steps', '–')} "
            f"| {p.get('image_size', '–')} | {p.get('lm_frozen', '–')} "
            f"| {p.get('mode', '–')} | {p.get('tau', '–')} | {_num(p.get('final_loss'))} "
            f"| {region} | {_num(p.get('train_s'), '.0f')} ({_num(p.get('train_cpu_s'), '.0f')}) "
            f"| {p.get('nonfinite_steps', '–')} |"
        )
    return "\n".join(lines)


def section(
    params: Any,
    groups: Sequence[Group],
    rows: Sequence[RunRow],
    orders: Sequence[Ordering],
    pretrains: Sequence[PretrainRow],
    skipped: Sequence[dict[str, str]],
    plots: Sequence[Path],
    results_md: Path,
    run_info: dict[str, Any],
    claims: Sequence[Claims] = (),
    label_rows: Sequence[LabelRow] = (),
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
        heading(params),
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
    parts += ["Reproduce:", "", "```", reproduce_command(params), "```", ""]
    return "\n".join(parts)


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
    info = run_info if run_info is not None else read_json(ab.report_dir / RUN_JSON)
    pre = pretrain_info(plan)
    results_md = Path(ab.results_md)
    text = section(
        params, groups, rows, orders, pre, plan.skipped, plots, results_md, info, claims, label_rows
    )
    update_results_md(results_md, text, heading=heading(params))
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
    write_json(ab.report_dir / SUMMARY_JSON, summary)
    return summary
