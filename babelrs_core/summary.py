"""The end-of-run summary table (rich): per-dataset metrics, H-mAP, where everything is."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from babelrs_core.concepts import DATASETS
from babelrs_core.io.markdown import table_head


def render_summary(results: dict[str, Any], console: Console | None = None) -> None:
    """Print the metrics table (if the run evaluated) and the outputs of each stage."""
    console = console or Console()
    evaluation = results.get("evaluate")
    if isinstance(evaluation, dict) and "overall" in evaluation:
        table = Table(title="SOI-mini evaluation (percent)", show_lines=False)
        for col in ("dataset", "modality", "AP@50", "mAP(.5:.95)", "images", "objects"):
            table.add_column(col, justify="left" if col in ("dataset", "modality") else "right")
        for name, info in DATASETS.items():
            row = evaluation.get(name)
            if isinstance(row, dict):
                table.add_row(
                    name,
                    info.modality,
                    f"{row['ap50']:.2f}",
                    f"{row['map']:.2f}",
                    str(row.get("images", "")),
                    str(row.get("objects", "")),
                )
        overall = evaluation["overall"]
        table.add_row("overall (class mean)", "", f"{overall['ap50']:.2f}", f"{overall['map']:.2f}")
        table.add_row("H-mAP (harmonic)", "", "", f"{overall['hmap']:.2f}")
        console.print(table)
    where = Table(title="Where things are", show_header=True)
    where.add_column("stage")
    where.add_column("output / MLflow run")
    for stage, res in results.items():
        if not isinstance(res, dict):
            continue
        out = (
            res.get("out") or res.get("manifest") or res.get("model_uri") or res.get("output") or ""
        )
        run = res.get("mlflow_run_id", "")
        where.add_row(stage, f"{out}  {run}".strip())
    parent = results.get("mlflow_parent_run_id")
    if parent:
        where.add_row("pipeline", f"MLflow parent run {parent}")
    console.print(where)


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The run's numbers for the pipeline's parent MLflow run: overall AP@50 / mAP / H-mAP, each
    dataset's AP@50 / mAP, the registered version and whether the gate promoted it."""
    out: dict[str, float] = {}
    evaluation = results.get("evaluate")
    if isinstance(evaluation, dict):
        for key in (*DATASETS, "overall"):
            row = evaluation.get(key)
            if isinstance(row, dict):
                prefix = "" if key == "overall" else f"{key}."
                out |= {f"{prefix}{m}": float(row[m]) for m in ("ap50", "map", "hmap") if m in row}
    registration = results.get("register")
    if isinstance(registration, dict) and "version" in registration:
        out["registered_version"] = float(registration["version"])
        if "promoted" in registration:
            out["promoted"] = float(bool(registration["promoted"]))
    return out


def summary_markdown(results: dict[str, Any], parent_run_id: str | None = None) -> str:
    """The run in markdown (the Prefect flow run's artifact): evaluation table, gate decision,
    validation outcome and the MLflow runs of every stage."""
    lines = ["# babelrs-retrain", ""]
    evaluation = results.get("evaluate")
    if isinstance(evaluation, dict) and "overall" in evaluation:
        lines += table_head(["dataset", "modality", "AP@50", "mAP(.5:.95)"], "llr")
        for name, info in DATASETS.items():
            row = evaluation.get(name)
            if isinstance(row, dict):
                lines.append(f"| {name} | {info.modality} | {row['ap50']:.2f} | {row['map']:.2f} |")
        o = evaluation["overall"]
        lines += [
            f"| overall (class mean) | | {o['ap50']:.2f} | {o['map']:.2f} |",
            f"| **H-mAP** | | | **{o['hmap']:.2f}** |",
            "",
        ]
    registration = results.get("register")
    if isinstance(registration, dict) and "version" in registration:
        gate = registration.get("gate", {})
        verdict = gate.get("gate.decision", "not gated")
        lines += [
            f"Registered `{registration.get('model_uri')}`: gate **{verdict}**"
            f" ({gate.get('gate.reason', '')}).",
            "",
        ]
    validation = results.get("validate")
    if isinstance(validation, dict) and "passed" in validation:
        status = "passed" if validation["passed"] else "FAILED"
        counts = f"{validation.get('images')} images, {validation.get('objects')} objects"
        lines += [f"Data validation {status}: {validation.get('checks')} checks over {counts}.", ""]
    runs = [
        (s, r["mlflow_run_id"])
        for s, r in results.items()
        if isinstance(r, dict) and r.get("mlflow_run_id")
    ]
    if parent_run_id or runs:
        lines += table_head(["stage", "MLflow run"])
        lines += [f"| pipeline (parent) | `{parent_run_id}` |"] if parent_run_id else []
        lines += [f"| {s} | `{r}` |" for s, r in runs]
    return "\n".join(lines)
