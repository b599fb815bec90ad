"""``infra/local/ui.sh`` (``make ui``) end to end on free ports and its own state folder: the
MLflow UI on the tracking store of the params, a persistent Prefect server, both healthy on
127.0.0.1, the Prefect API URL written for ``make run``; Ctrl-C (SIGINT to the script) stops both
and leaves no process and no stale API URL behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.orchestration.servers_prefect_mlflow import ROOT, clean_env, start_until_ready
from tests.servers import free_port

SCRIPT = ROOT / "infra/local/ui.sh"


def test_ui_script_is_valid_bash_and_a_make_target() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^ui: .*\n\tbash infra/local/ui.sh$", makefile, flags=re.M)
    # make run and make ablation follow a running make ui: its API URL, if the server answers
    follow = makefile.split("\nFOLLOW_UI = ", 1)[1].split("\n\n", 1)[0]
    assert "$(PREFECT_HOME)/api_url" in follow and 'export PREFECT_API_URL="$$api"' in follow
    for target, command in (("run", "pipeline run"), ("ablation", "ablation run")):
        recipe = makefile.split(f"\n{target}: ", 1)[1].split("\n\n", 1)[0]
        assert f"\t@$(FOLLOW_UI); \\\n\t$(BABELRS) {command}\n" in recipe + "\n", target


def _health(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status


@pytest.mark.slow
def test_ui_starts_mlflow_and_prefect_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tracking"]["store"] = str(tmp_path / "mlflow")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    state = tmp_path / "prefect"
    mlflow_port, prefect_port = free_port(), free_port()
    env = clean_env(
        BABELRS_MLFLOW_PORT=str(mlflow_port),
        BABELRS_PREFECT_PORT=str(prefect_port),
        BABELRS_PREFECT_DIR=str(state),
        BABELRS_PARAMS=str(tmp_path / "params.yaml"),
        BABELRS_UI_TIMEOUT="240",
    )
    proc, out = start_until_ready(SCRIPT, tmp_path, env)
    try:
        assert "Ctrl-C stops both" in out, out
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
        assert len(pids) == 2  # MLflow, Prefect
        mlflow_url, prefect_api = (
            f"http://127.0.0.1:{mlflow_port}",
            f"http://127.0.0.1:{prefect_port}/api",
        )
        assert (
            f"MLflow UI:  {mlflow_url}" in out
            and f"Prefect UI: http://127.0.0.1:{prefect_port}" in out
        )
        assert _health(f"{mlflow_url}/health") == 200
        assert _health(f"{prefect_api}/health") == 200
        assert (state / "api_url").read_text().strip() == prefect_api  # what make run reads

        import mlflow

        # the UI serves the params' tracking store (the database the pipeline writes)
        client = mlflow.MlflowClient(mlflow_url)
        client.create_experiment("ui-check")
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
        local = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
        assert local.get_experiment_by_name("ui-check") is not None
        assert (state / "prefect.db").is_file()

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 130, rest
        assert "stopped" in rest and time.monotonic() - started < 60
        assert not (state / "api_url").exists()
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"pid {pid} still running"
        for port in (mlflow_port, prefect_port):  # nothing listens any more
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
