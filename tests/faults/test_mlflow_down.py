"""The MLflow server dies while the register stage uploads the model: the stage fails loudly, no
model version exists afterwards, and a rerun (server back, same database and bucket) registers it.

Uploads go through a bandwidth-capped local proxy so the server can be killed mid-upload."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.faults.faultkit import cli, mlflow_server, registry_setup
from tests.orchestration.servers_prefect_mlflow import clean_env, make_bucket
from tests.servers import ThrottledProxy, free_port, start_moto

pytestmark = pytest.mark.slow

NAME = "babelrs-detector-faults"
EXPERIMENT = "faults-mlflow-down"


def _running_register_run(client) -> bool:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return False
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return bool(runs)


def test_mlflow_killed_mid_registration_then_rerun_registers(tmp_path: Path) -> None:
    import mlflow

    params_file = registry_setup(tmp_path, EXPERIMENT, NAME)

    s3 = start_moto(log=tmp_path / "moto.log")
    make_bucket(s3, "mlflow")
    port = free_port()
    server = mlflow_server(tmp_path, s3, port)
    proxy = ThrottledProxy(port, bytes_per_s=400_000)  # the ~14 MB model takes ~35 s to upload
    try:
        env = clean_env(
            PYTHONPATH=str(Path(__file__).resolve().parents[2]),
            MLFLOW_TRACKING_URI=proxy.url,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
            MLFLOW_HTTP_REQUEST_TIMEOUT="20",
            OMP_NUM_THREADS="1",
        )
        args = ("stage", "register", "--params", str(params_file), "--quiet")
        proc = cli(*args, cwd=tmp_path, env=env)
        direct = mlflow.MlflowClient(server.url)
        deadline = time.monotonic() + 600
        while not _running_register_run(direct):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the register run never started"
            time.sleep(0.2)
        while proxy.forwarded < 1_000_000:  # the model upload is under way
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, f"only {proxy.forwarded} bytes uploaded"
            time.sleep(0.1)
        server.proc.send_signal(signal.SIGKILL)
        import os

        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        out = proc.communicate(timeout=600)[0]
        # the stage fails on the lost connection, naming the tracking server's URL (exit 1: an
        # error it cannot fix by itself, MLflow's exception with its cause)
        assert proc.returncode == 1, out[-3000:]
        last = out.strip().splitlines()[-1]
        assert last.startswith(f"mlflow.exceptions.MlflowException: API request to {proxy.url}/"), (
            last
        )
        assert "Connection aborted" in last, last
        assert not (tmp_path / "registry" / "registration.json").exists()

        server = mlflow_server(tmp_path, s3, port)  # same database, same bucket
        direct = mlflow.MlflowClient(server.url)
        assert direct.search_model_versions(f"name = '{NAME}'") == []

        env["MLFLOW_TRACKING_URI"] = server.url
        proc = cli(*args, cwd=tmp_path, env=env)
        out = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, out[-4000:]
        versions = direct.search_model_versions(f"name = '{NAME}'")
        assert [v.version for v in versions] == ["1"]
        assert direct.get_model_version_by_alias(NAME, "challenger").version == "1"
        reg = json.loads((tmp_path / "registry" / "registration.json").read_text())
        assert str(reg["version"]) == "1"
    finally:
        proxy.close()
        server.stop()
        s3.stop()
