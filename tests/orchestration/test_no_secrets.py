"""No secret leaks: the flow runs with S3 credentials in its environment (and a token-like
variable), then every MLflow param, tag, metric name, artifact and log line of the run, the flow's
own output and the Prefect logs are scanned for the secret values."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import mlflow
import pytest

from tests.orchestration.conftest import Servers
from tests.orchestration.servers_prefect_mlflow import FLOW_SCRIPT, ROOT, prefect_env
from tests.orchestration.test_flow_server import tiny_overrides

pytestmark = pytest.mark.slow

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAZZLEAKCANARY0001",
    "AWS_SECRET_ACCESS_KEY": "leak-canary/aws-secret+Zq8w2vX1",
    "BABELRS_API_TOKEN": "leak-canary-token-7f3c91",
}
STAGES = ["generate", "import", "validate"]  # validate logs Data Docs + a report as artifacts


def _prefect_logs(api_url: str, flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with SyncPrefectClient(api_url) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )
    return [log.message for log in logs]


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_flow_with_credentials_leaks_nothing(servers: Servers, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = prefect_env(
        tmp_path / "prefect-home",
        servers.prefect.url,
        MLFLOW_TRACKING_URI=servers.mlflow.url,
        **SECRETS,
    )
    env["PREFECT_LOGGING_LEVEL"] = "DEBUG"  # the most verbose logs a user could switch on
    overrides = tiny_overrides(tmp_path, "no-secrets")
    overrides["validation.out_dir"] = str(tmp_path / "validation")
    overrides["validation.data_docs_dir"] = str(tmp_path / "validation" / "data_docs")
    overrides["validation.required_splits"] = ["train"]  # the 9-image SOI-mini has no val split
    overrides["validation.train_classes"] = "observed"
    for ds, classes in {"sardet": ["ship", "car"], "dota": ["plane", "ship"]}.items():
        overrides[f"soi_mini.{ds}.classes"] = classes  # few classes: each one lands in train
        overrides[f"soi_mini.{ds}.splits"] = {"train": 4, "test" if ds == "sardet" else "val": 1}
    overrides["soi_mini.dronevehicle.classes"] = ["car", "truck"]
    kwargs = {"overrides": overrides, "stages": STAGES, "track": True}
    proc = subprocess.run(
        [sys.executable, "-c", FLOW_SCRIPT, json.dumps([kwargs])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("FLOW-RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("FLOW-RESULT "))
    assert result["state"] == "COMPLETED", result
    assert _leaks(proc.stdout + proc.stderr) == []

    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name("no-secrets")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 + len(STAGES)  # parent + one child per stage
    scanned_files = 0
    for run in runs:
        data = run.data
        blob = json.dumps([data.params, data.tags, sorted(data.metrics)])
        assert _leaks(blob) == [], run.info.run_name
        root = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        for path in (p for p in root.rglob("*") if p.is_file()):
            scanned_files += 1
            assert _leaks(path.read_bytes().decode("utf-8", "replace")) == [], path
    assert scanned_files >= 3  # the validate report, Data Docs pages, the flow summary...

    messages = _prefect_logs(servers.prefect.url, result["flow_run_id"])
    assert messages  # the flow's log lines did reach the server
    assert _leaks("\n".join(messages)) == []
