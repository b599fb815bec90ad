"""``infra/local/serve_scheduler.sh`` (``make serve-scheduler``) end to end, on its own port and
state folder: server healthy, work pool, ``gpu`` tag concurrency limit from
``orchestration.gpu_concurrency``, the ``weekly-retrain`` deployment with its cron schedule, a
worker polling the pool; Ctrl-C (SIGINT to the script) stops the worker and the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from babelrs_core.config import ConfigError, load_params
from tests.orchestration.servers_prefect_mlflow import ROOT, clean_env, start_until_ready
from tests.servers import free_port

SCRIPT = ROOT / "infra/local/serve_scheduler.sh"


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_concurrency_param() -> None:
    assert load_params(ROOT / "params.yaml").orchestration.gpu_concurrency >= 1
    with pytest.raises(ConfigError, match=r"orchestration\.gpu_concurrency"):
        load_params(ROOT / "params.yaml", {"orchestration.gpu_concurrency": 0})


@pytest.mark.slow
def test_serve_scheduler_sets_up_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["orchestration"]["gpu_concurrency"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    state = tmp_path / "prefect"
    env = clean_env(
        BABELRS_PREFECT_PORT=str(port),
        BABELRS_PREFECT_DIR=str(state),
        BABELRS_PARAMS=str(tmp_path / "params.yaml"),
        BABELRS_PREFECT_TIMEOUT="240",
    )
    proc, out = start_until_ready(SCRIPT, tmp_path, env)
    try:
        assert "Ctrl-C stops" in out, out + (state / "server.log").read_text()[-3000:]
        pids = [int(p) for p in re.findall(r"\(pid (\d+)", out)]
        assert len(pids) == 2  # server, worker

        from prefect.client.orchestration import SyncPrefectClient

        api = f"http://127.0.0.1:{port}/api"
        with SyncPrefectClient(api) as client:
            pool = client.read_work_pool("babelrs-process")
            assert pool.type == "process"
            assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 2
            deployment = client.read_deployment_by_name("babelrs-retrain/weekly-retrain")
            assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 1"]
            deadline = time.monotonic() + 120
            while not client.read_workers_for_work_pool("babelrs-process"):
                assert time.monotonic() < deadline, (state / "worker.log").read_text()
                time.sleep(1)
        assert (state / "scheduler.db").is_file()  # SQLite under the state folder

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 130, rest
        assert "stopped" in rest
        assert time.monotonic() - started < 60
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still running"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
