"""The MLflow server dies right after ``register_model``: the version exists but has no alias, no
gate tags and no card yet. With the server back on the same store, the rerun of the register stage
finishes that version (no second version, no version without its gate tags), the killed attempt's
run is not left RUNNING, and the model has exactly one champion.

The hook ``BABELRS_FAULT_STOP_AFTER_REGISTER`` (babelrs_core/registry/registry.py) stops the stage
process once the version is created; the test kills the server, then lets the process go on."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from babelrs_core.registry.registry import STATUS_TAG, STOP_AFTER_REGISTER_ENV
from tests.faults.faultkit import REPO, cli, mlflow_server, registry_setup, wait_stopped
from tests.orchestration.servers_prefect_mlflow import clean_env, make_bucket
from tests.servers import free_port, start_moto

pytestmark = pytest.mark.slow

NAME = "babelrs-detector-half-registered"
EXPERIMENT = "faults-register-interrupted"


def test_mlflow_killed_after_register_model_then_rerun_finishes_that_version(
    tmp_path: Path,
) -> None:
    import mlflow

    params_file = registry_setup(tmp_path, EXPERIMENT, NAME)

    s3 = start_moto(log=tmp_path / "moto.log")
    make_bucket(s3, "mlflow")
    port = free_port()
    server = mlflow_server(tmp_path, s3, port)
    try:
        env = clean_env(PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=server.url,
                        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="10",
                        OMP_NUM_THREADS="1")  # fmt: skip
        args = ("stage", "register", "--params", str(params_file), "--quiet")
        proc = cli(*args, cwd=tmp_path, env={**env, STOP_AFTER_REGISTER_ENV: "1"})
        wait_stopped(proc)
        client = mlflow.MlflowClient(server.url)
        assert [v.version for v in client.search_model_versions(f"name = '{NAME}'")] == ["1"]
        half = client.get_model_version(NAME, "1")
        assert half.tags[STATUS_TAG] == "started" and half.aliases == []
        assert not any(k.startswith("gate.") for k in half.tags)
        killed_run = half.run_id

        os.killpg(server.proc.pid, signal.SIGKILL)  # the server and its worker
        server.proc.wait(timeout=30)
        os.kill(proc.pid, signal.SIGCONT)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 1, out[-3000:]
        assert f"API request to {server.url}/" in out.strip().splitlines()[-1], out[-3000:]
        assert not (tmp_path / "registry" / "registration.json").exists()

        server = mlflow_server(tmp_path, s3, port)  # same database, same bucket
        assert client.get_run(killed_run).info.status == "RUNNING"  # left by the dead process
        proc = cli(*args, cwd=tmp_path, env=env)
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-4000:]

        versions = client.search_model_versions(f"name = '{NAME}'")
        assert [v.version for v in versions] == ["1"]  # finished, not registered again
        v1 = client.get_model_version(NAME, "1")
        reg = json.loads((tmp_path / "registry" / "registration.json").read_text())
        assert (reg["version"], reg["resumed"], reg["promoted"]) == ("1", True, True)
        assert v1.tags[STATUS_TAG] == "complete"
        assert v1.tags[f"{STATUS_TAG}.resumed_by_run"] == reg["run_id"] != killed_run
        assert v1.tags["gate.decision"] == "promoted" and "first version" in v1.tags["gate.reason"]
        assert sorted(v1.aliases) == ["challenger", "champion"]  # the one champion
        assert "**promoted**" in v1.description  # the card, with the gate's verdict
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
        assert {r.info.status for r in runs.values()} == {"KILLED", "FINISHED"}
        assert runs[killed_run].info.status == "KILLED"
        assert "babelrs.closed_as_orphan" in runs[killed_run].data.tags
        assert runs[reg["run_id"]].info.status == "FINISHED"
    finally:
        server.stop()
        s3.stop()
