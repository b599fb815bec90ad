"""kill -9 of the process running a whole ``babelrs pipeline run`` (a real Prefect server and a
real MLflow server), while fine-tuning writes a checkpoint; then the same command again.

The rerun takes the stages finished before from Prefect's cache (``Cached`` task runs, no new
MLflow runs for them), resumes fine-tuning from its last complete checkpoint and completes; the
MLflow runs the killed process left RUNNING (the flow's parent run and the fine-tuning run) are
closed as KILLED by the rerun, so none is left RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from babelrs_core.config import load_params
from babelrs_core.io.atomic import FAULT_STOP_ENV
from tests.detector.det_fakes import TINY, make_fake_encoder
from tests.faults.faultkit import wait_stopped
from tests.orchestration.conftest import Servers
from tests.orchestration.servers_prefect_mlflow import ROOT, prefect_env
from tests.orchestration.test_flow_server import task_states, tiny_overrides

pytestmark = pytest.mark.slow

EXPERIMENT = "flow-killed"
STAGES = ("generate", "import", "finetune")


def _pipeline(work: Path, params: Path, env: dict[str, str], log: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "babelrs_core.cli", "pipeline", "run", "--params", str(params)]
    for name in STAGES:
        args += ["--stage", name]
    with open(work / log, "w") as out:  # a file, not a pipe: a full pipe would block the flow
        return subprocess.Popen(args, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def test_pipeline_killed_mid_finetune_then_rerun_resumes(servers: Servers, tmp_path: Path) -> None:
    work = tmp_path
    make_fake_encoder(work / "pretrain")
    out = work / "finetune"
    over = {**tiny_overrides(work, EXPERIMENT), **TINY, "finetune.iters": 6,
            "paths.pretrain_out": str(work / "pretrain"), "paths.finetune_out": str(out),
            "finetune.checkpoint_every": 2, "finetune.keep_checkpoints": 3}  # fmt: skip
    params = work / "params.yaml"
    dumped = load_params(ROOT / "params.yaml", over).model_dump(mode="json")
    params.write_text(yaml.safe_dump(dumped, sort_keys=False))
    env = prefect_env(work / "prefect-home", servers.prefect.url, PYTHONPATH=str(ROOT),
                      MLFLOW_TRACKING_URI=servers.mlflow.url, OMP_NUM_THREADS="1")  # fmt: skip

    proc = _pipeline(work, params, {**env, FAULT_STOP_ENV: "iter_4.pth"}, "first.log")
    wait_stopped(proc, timeout=600)  # fine-tuning is writing its second checkpoint
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckdir = out / "checkpoints"
    assert sorted(p.name for p in ckdir.glob("*.pth")) == ["iter_2.pth"]

    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    before = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    running = {r.info.run_name for r in before.values() if r.info.status == "RUNNING"}
    assert running == {"babelrs-retrain", "finetune"}  # what the killed process left

    proc = _pipeline(work, params, env, "second.log")
    assert proc.wait(timeout=900) == 0, (work / "second.log").read_text()[-4000:]

    train = json.loads((out / "train.json").read_text())
    assert (train["resumed_from"], train["iters_this_run"]) == (2, 4)
    iters = [json.loads(x)["iter"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == [2, 4, 6]
    assert (out / "detector.safetensors").is_file()

    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    assert [r for r in runs.values() if r.info.status == "RUNNING"] == []
    for run_id, run in before.items():
        if run.info.status == "RUNNING":  # closed by the rerun, with the reason
            assert runs[run_id].info.status == "KILLED"
            assert "is gone" in runs[run_id].data.tags["babelrs.closed_as_orphan"]
    (parent,) = [r for r in runs.values() if r.info.run_id not in before
                 and r.info.run_name == "babelrs-retrain"]  # fmt: skip
    assert parent.info.status == "FINISHED"
    children = [
        r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    assert [(c.info.run_name, c.info.status) for c in children] == [("finetune", "FINISHED")]
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    assert task_states(servers.prefect.url, flow_run_id) == {
        "generate": "Cached",
        "import": "Cached",
        "finetune": "Completed",
    }
