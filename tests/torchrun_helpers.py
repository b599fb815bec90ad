"""Helpers of the torchrun tests: the CLI as a subprocess on CPU (gloo), MLflow runs by parent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from babelrs_core.settings_env import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[1]


def write_params(params: Any, path: Path) -> Path:
    """The validated params as a YAML file (what the CLI reads)."""
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def cli_env() -> dict[str, str]:
    """The environment of :func:`cli`: CPU, one thread per process, offline, no MLflow server."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **OFFLINE_ENV,
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BABELRS_PARENT_RUN_ID", None)
    return env


def cli(args: list[str], cwd: Path, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """``python -m babelrs_core.cli ARGS`` on CPU, one thread per process, offline."""
    return subprocess.run(
        [sys.executable, "-m", "babelrs_core.cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def cli_together(
    arg_lists: list[list[str]],
    cwd: Path,
    timeout_s: float = 900,
    envs: list[dict[str, str]] | None = None,
) -> list[subprocess.CompletedProcess]:
    """Several :func:`cli` commands at once (the nodes of a multi-node run), each with its extra
    ``envs`` entry; waits for all. Each runs in its own process group, killed with its torchrun
    and workers when one command fails (the others would wait for it at the rendezvous) or at
    ``timeout_s``."""
    envs = envs or [{} for _ in arg_lists]
    with contextlib.ExitStack() as stack:
        logs = [
            (stack.enter_context(tempfile.TemporaryFile("w+")),
             stack.enter_context(tempfile.TemporaryFile("w+")))
            for _ in arg_lists
        ]  # fmt: skip
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "babelrs_core.cli", *args],
                cwd=cwd,
                env={**cli_env(), **extra},
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,
            )
            for args, extra, (out, err) in zip(arg_lists, envs, logs, strict=True)
        ]
        deadline = time.monotonic() + timeout_s
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if any(p.returncode for p in procs if p.returncode is not None):
                    break
                time.sleep(0.5)
        finally:  # SIGTERM first: torchrun stops its workers (in sessions of their own) on it
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for proc in procs:
                    if proc.poll() is None:
                        os.killpg(proc.pid, sig)
                for proc in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=30)
        done = []
        for proc, (out, err) in zip(procs, logs, strict=True):
            out.seek(0)
            err.seek(0)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(),
                                                    err.read()))  # fmt: skip
    return done


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
