"""The end-of-run summary table (rich): per-dataset metrics, H-mAP, where everything is."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from babelrs_core.concepts import DATASETS


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
                    name, info.modality, f"{row['ap50']:.2f}", f"{row['map']:.2f}",
                    str(row.get("images", "")), str(row.get("objects", "")),
                )  # fmt: skip
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
