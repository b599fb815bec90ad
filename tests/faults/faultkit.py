"""Shared pieces of the fault suite: a tiny fine-tuning setup run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from babelrs_core.settings_env import OFFLINE_ENV
from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params

REPO = Path(__file__).resolve().parents[2]


def tiny_finetune_setup(root: Path, **extra: object) -> Path:
    """Fake data + fake encoder under ``root``; return a params file for a tiny fine-tuning run."""
    make_fake_manifest(root)
    make_fake_encoder(root / "pretrain")
    params = tiny_params(root, **extra)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def registry_setup(root: Path, experiment: str, model_name: str) -> Path:
    """A tiny fine-tuned and evaluated detector under ``root`` for a register stage; returns its
    params file (gate floor 0, registration record under ``root/registry``)."""
    import torch

    from babelrs_core.detector.train import run_finetune
    from babelrs_core.evaluation.report import run_evaluation

    torch.set_num_threads(1)
    over = {
        "finetune.iters": 2,
        "tracking.experiment": experiment,
        "registry.model_name": model_name,
    }
    over |= {"registry.floor": 0.0, "registry.out_dir": str(root / "registry")}
    params_file = tiny_finetune_setup(root, **over)
    params = tiny_params(root, **over)
    run_finetune(params)
    run_evaluation(params)
    return params_file


def cli_env(**extra: str) -> dict[str, str]:
    """Environment of a CLI subprocess: this checkout's code, offline, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MPLBACKEND="Agg", **OFFLINE_ENV, **extra)
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start ``babelrs <args>`` (this checkout's code) in ``cwd``."""
    return subprocess.Popen(
        [sys.executable, "-m", "babelrs_core.cli", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def run_cli(*args: str, cwd: Path, timeout: float = 600, **kw) -> tuple[int, str]:
    proc = cli(*args, cwd=cwd, **kw)
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until ``path`` exists (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path} appeared:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.<name>.*.tmp``)."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def wait_stopped(proc: subprocess.Popen, timeout: float = 600) -> None:
    """Wait until ``proc`` stopped itself (state ``T``: the ``BABELRS_FAULT_STOP_WRITE`` hook of
    babelrs_core/io/atomic.py holds it half-way through a write)."""
    deadline = time.monotonic() + timeout
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rpartition(")")[2].split()[0] != "T":
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended before the write hook stopped it:\n{proc.stdout.read()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the write hook did not stop the process within {timeout} s")
        time.sleep(0.1)


def mlflow_server(state: Path, s3, port: int, bucket: str = "mlflow"):
    """``mlflow server`` on ``port`` with its SQLite store in ``state`` and artifacts in
    ``s3://bucket/`` on the moto server ``s3``: a restart on the same port and store is the same
    server again."""
    from tests.orchestration.servers_prefect_mlflow import BIN, _spawn, clean_env
    from tests.servers import aws_env

    env = aws_env(s3.url, clean_env())
    env.update(MLFLOW_S3_ENDPOINT_URL=s3.url, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", f"s3://{bucket}/"]
    cmd += ["--allowed-hosts", "127.0.0.1:*,localhost:*"]
    server = _spawn("mlflow server", cmd, env, state / "mlflow-server.log", state)
    server.url = f"http://127.0.0.1:{port}"
    server.health = server.url + "/health"
    return server.wait()
