"""No secret leaks: the flow runs all eight stages (tiny settings) with S3 credentials in its
environment (and a token-like variable), then everything it left is scanned for the secret values:

* every Prefect log line of the flow run, read page by page until the API has no more, the number
  read checked against the server's own count (its database);
* every MLflow run of the experiment (parent + one per stage): params, tags, metric names and the
  text of every artifact; the registered model version's tags and description (model card);
* every file under the run's output folder, and the flow process's own stdout / stderr."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import mlflow
import pytest

from babelrs_core.pipeline import PIPELINE
from tests.orchestration.conftest import Servers
from tests.orchestration.servers_prefect_mlflow import FLOW_SCRIPT, ROOT, prefect_env
from tests.orchestration.test_flow_server import tiny_overrides

pytestmark = pytest.mark.slow

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAZZLEAKCANARY0001",
    "AWS_SECRET_ACCESS_KEY": "leak-canary/aws-secret+Zq8w2vX1",
    "BABELRS_API_TOKEN": "leak-canary-token-7f3c91",
}
STAGES = [s.name for s in PIPELINE]  # all eight
MODEL = "no-secrets-detector"
PAGE = 50  # Prefect log page size: small, so that several pages are read


def _overrides(work: Path) -> dict:
    """Every stage, tiny: 9 SOI-mini images, a 4-step pretraining with a tiny language model,
    a 4-iteration fine-tuning, every output under ``work``."""
    ov = tiny_overrides(work, "no-secrets")
    ov["validation.out_dir"] = str(work / "validation")
    ov["validation.data_docs_dir"] = str(work / "validation" / "data_docs")
    ov["validation.required_splits"] = ["train"]  # the 9-image SOI-mini has no val split
    ov["validation.train_classes"] = "observed"
    for ds, classes in {"sardet": ["ship", "car"], "dota": ["plane", "ship"]}.items():
        ov[f"soi_mini.{ds}.classes"] = classes  # few classes: each one lands in train
        ov[f"soi_mini.{ds}.splits"] = {"train": 4, "test" if ds == "sardet" else "val": 1}
    ov["soi_mini.dronevehicle.classes"] = ["car", "truck"]
    for ds in ("sardet", "dota", "dronevehicle"):
        ov[f"soi_mini.{ds}.image_size"] = {"width": 96, "height": 96}
        for k, v in {"stacked_convs": 1, "feat_channels": 16, "anchor_scale": 4}.items():
            ov[f"finetune.heads.{ds}.{k}"] = v
    ov.update({
        "paths.pretrain_out": str(work / "pretrain"),
        "paths.finetune_out": str(work / "finetune"),
        "paths.eval_out": str(work / "eval"),
        "shards.dir": str(work / "shards"),
        "shards.index": str(work / "shards" / "index.parquet"),
        "registry.out_dir": str(work / "registry"),
        "registry.model_name": MODEL,
        "registry.floor": 0.0,
        "pretrain.language_model": "tiny",
        "pretrain.image_size": 64,
        "pretrain.steps": 4,
        "pretrain.batch_size": 2,
        "pretrain.warmup_steps": 1,
        "pretrain.checkpoint_every": 2,
        "pretrain.eval_max_per_task": 2,
        "pretrain.max_new_tokens": 2,
        "pretrain.max_answer_tokens": 8,
        "pretrain.device": "cpu",
        "pretrain.threads": 1,
        "pretrain.tiny_lm": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64},
        "finetune.iters": 4,
        "finetune.batch_size": 4,
        "finetune.warmup_iters": 1,
        "finetune.neck_channels": 16,
        "finetune.log_every": 2,
        "finetune.checkpoint_every": 2,
        "finetune.val_every": 0,
        "finetune.device": "cpu",
        "finetune.threads": 1,
        "finetune.modalities.sar.image_size": 64,
        "finetune.modalities.rgb.image_size": 64,
        "finetune.modalities.ir.image_size": 64,
        "evaluation.samples_per_modality": 1,
    })  # fmt: skip
    return ov


def prefect_logs(api_url: str, flow_run_id: str, page: int = PAGE) -> list[str]:
    """Every log message of the flow run (its task runs' included), page after page until the
    API returns a short page."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    out: list[str] = []
    with SyncPrefectClient(api_url) as client:
        while True:
            logs = client.read_logs(log_filter=flt, limit=page, offset=len(out))
            out += [log.message for log in logs]
            if len(logs) < page:
                return out


def server_log_count(db: Path, flow_run_id: str) -> int:
    """The number of log rows the Prefect server stored for the flow run (its SQLite database)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (n,) = con.execute(
            "SELECT count(*) FROM log WHERE flow_run_id IN (?, ?)",
            (flow_run_id, UUID(flow_run_id).hex),
        ).fetchone()
    return int(n)


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def _file_leaks(root: Path) -> tuple[int, dict[str, list[str]]]:
    """(files read, path -> leaked names) over every file under ``root``."""
    n, found = 0, {}
    for path in (p for p in root.rglob("*") if p.is_file()):
        n += 1
        leaked = _leaks(path.read_bytes().decode("utf-8", "replace"))
        if leaked:
            found[str(path)] = leaked
    return n, found


def test_flow_with_credentials_leaks_nothing(servers: Servers, tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = prefect_env(
        tmp_path / "prefect-home",
        servers.prefect.url,
        MLFLOW_TRACKING_URI=servers.mlflow.url,
        OMP_NUM_THREADS="1",
        **SECRETS,
    )
    env["PREFECT_LOGGING_LEVEL"] = "DEBUG"  # the most verbose logs a user could switch on
    kwargs = {"overrides": _overrides(work), "stages": STAGES, "track": True}
    proc = subprocess.run(
        [sys.executable, "-c", FLOW_SCRIPT, json.dumps([kwargs])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("FLOW-RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("FLOW-RESULT "))
    assert result["state"] == "COMPLETED", (result, proc.stderr[-4000:])
    assert _leaks(proc.stdout + proc.stderr) == []

    # every Prefect log line, all pages, as many as the server stored
    messages = prefect_logs(servers.prefect.url, result["flow_run_id"])
    assert len(messages) > PAGE  # more than one page (DEBUG logs of eight stages)
    assert len(messages) == server_log_count(servers.state / "prefect.db", result["flow_run_id"])
    assert [m for m in messages if _leaks(m)] == []

    # every MLflow run: params, tags, metric names, artifact texts
    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name("no-secrets")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 + len(STAGES)  # parent + one child per stage
    assert sorted(r.data.tags.get("babelrs.stage", "") for r in runs)[1:] == sorted(STAGES)
    scanned = 0
    for run in runs:
        data = run.data
        blob = json.dumps([data.params, data.tags, sorted(data.metrics)])
        assert _leaks(blob) == [], run.info.run_name
        root = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        n, found = _file_leaks(root)
        scanned += n
        assert found == {}, run.info.run_name
    assert scanned >= 10  # reports, Data Docs, curves, the registered model's files...
    for mv in client.search_model_versions(f"name='{MODEL}'"):
        assert _leaks(json.dumps([mv.tags, mv.description, mv.source])) == [], mv.version

    # every file the stages wrote
    n, found = _file_leaks(work)
    assert n >= 20 and found == {}
    assert (work / "registry" / "registration.json").is_file()  # the last stage did run
