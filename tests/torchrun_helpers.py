"""Helpers of the torchrun tests: the CLI as a subprocess on CPU (gloo), MLflow runs by parent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from babelrs_core.settings_env import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[1]


def write_params(params: Any, path: Path) -> Path:
    """The validated params as a YAML file (what the CLI reads)."""
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def cli(args: list[str], cwd: Path, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """``python -m babelrs_core.cli ARGS`` on CPU, one thread per process, offline."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **OFFLINE_ENV,
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BABELRS_PARENT_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-m", "babelrs_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def child_runs(tracker: Any, parent_id: str) -> list[Any]:
    """MLflow runs nested under ``parent_id``."""
    return tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )


def logged_losses(out: Path) -> list[float]:
    """The ``loss`` of every line of a stage's ``metrics.jsonl``."""
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def run_under_parent(stage: str, params: Any, tmp_path: Path) -> tuple[Any, Any, str]:
    """Start a parent MLflow run, then ``babelrs stage <stage> --parent-run-id ...`` with
    ``params`` (written to YAML); returns (completed process, tracker, parent run id)."""
    from babelrs_core.tracking import Tracker

    tracker = Tracker.from_params(params)
    parent = tracker.start("parent", {})
    args = ["stage", stage, "--params", str(write_params(params, tmp_path / "p.yaml"))]
    proc = cli([*args, "--quiet", "--parent-run-id", parent], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, tracker, parent
