"""The ``babelrs-retrain`` flow against a real Prefect server and a real MLflow server (SQLite
backend, artifacts proxied to S3 on a moto server), all on 127.0.0.1.

The flow runs in subprocesses whose environment holds only ``PREFECT_API_URL``,
``MLFLOW_TRACKING_URI`` and a temporary ``PREFECT_HOME`` (where the task cache records live), with
SOI-mini cut down to 9 images and only the fast stages ``generate`` and ``import``:

1. first run: every stage runs; MLflow has the parent run and one child per stage with params,
   metrics, lineage tags and artifacts; Prefect has the flow and task runs, all Completed;
2. the same run again: every task is ``Cached`` (no child runs);
3. one key only ``import`` reads changed: ``generate`` is ``Cached``, ``import`` runs.

Invalid overrides fail the flow before any task run exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import mlflow
import pytest

from babelrs_core.config import flatten, flatten_dict, load_params
from babelrs_core.io.hashing import path_hash
from babelrs_core.pipeline import params_subset, stage
from babelrs_core.tracking import git_lineage, params_hash
from flows.common import run_name
from tests.orchestration.conftest import Servers
from tests.orchestration.servers_prefect_mlflow import (
    ROOT,
    bucket_keys,
    prefect_env,
    run_flow,
    run_flows,
)
from tests.pipeline.lineage import assert_stage_lineage

pytestmark = pytest.mark.slow

STAGES = ["generate", "import"]
EXPERIMENT = "orchestration-flow"
IMPORT_ONLY_KEY = "importers.min_box_size_px"  # read by `import`, not by `generate`


def tiny_overrides(work: Path, experiment: str) -> dict[str, Any]:
    """SOI-mini with 9 images; every output under ``work``."""
    return {
        "soi_mini.sardet.splits": {"train": 2, "test": 1},
        "soi_mini.dota.splits": {"train": 2, "val": 1},
        "soi_mini.dronevehicle.splits": {"train": 2, "test": 1},
        "paths.raw": str(work / "raw"),
        "paths.manifest": str(work / "manifest.parquet"),
        "tracking.store": str(work / "mlflow-unused"),  # the server is used (MLFLOW_TRACKING_URI)
        "tracking.experiment": experiment,
    }


def task_states(api_url: str, flow_run_id: str) -> dict[str, str]:
    """Task run name -> state name of one flow run, read through the Prefect client."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with SyncPrefectClient(api_url) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
    return {r.name: r.state.name for r in runs if r.state is not None}


def child_runs(client: mlflow.MlflowClient, experiment_id: str, parent_id: str) -> dict[str, Any]:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return {r.data.tags["babelrs.stage"]: r for r in runs}


@pytest.fixture(scope="module")
def runs(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The three flow runs (first, unchanged, one import key changed), in order."""
    work = tmp_path_factory.mktemp("flow")
    env = prefect_env(
        work / "prefect-home", servers.prefect.url, MLFLOW_TRACKING_URI=servers.mlflow.url
    )
    overrides = tiny_overrides(work, EXPERIMENT)
    changed = {**overrides, IMPORT_ONLY_KEY: 2.0}
    lineage = git_lineage(ROOT)
    out = []
    for ov in (overrides, overrides, changed):
        result = run_flow({"overrides": ov, "stages": STAGES, "track": True}, env)
        assert result["state"] == "COMPLETED", result
        out.append(result)
    return SimpleNamespace(
        first=out[0],
        second=out[1],
        third=out[2],
        overrides=overrides,
        changed=changed,
        lineage=lineage,
        work=work,
    )


def test_first_run_is_tracked_in_mlflow(runs: SimpleNamespace, servers: Servers) -> None:
    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    params = load_params(ROOT / "params.yaml", runs.overrides)
    flow_run_id = runs.first["flow_run_id"]
    parent_id = runs.first["result"]["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "babelrs-retrain"
    assert "mlflow.parentRunId" not in parent.data.tags

    # the whole params, flattened, on the parent
    expected = {k: str(v)[:6000] for k, v in flatten(params).items()}
    assert parent.data.params == expected

    children = child_runs(client, exp.experiment_id, parent_id)
    assert sorted(children) == sorted(STAGES)
    for name, child in children.items():
        spec = stage(name)
        assert child.info.status == "FINISHED"
        assert child.info.run_id == runs.first["result"][name]["mlflow_run_id"]
        # exactly the params subset the stage reads
        subset = {k: str(v) for k, v in flatten_dict(params_subset(params, spec.params)).items()}
        assert child.data.params == subset
        assert child.data.metrics["stage_seconds"] > 0
        # artifacts: the metric / plot / extra files the stage writes (none for these two)
        files = [spec.resolve(p, params) for p in (*spec.metrics, *spec.plots)]
        files += [spec.resolve(p, params) for p in spec.extra.get("artifacts", ())]
        logged = {a.path for a in client.list_artifacts(child.info.run_id, name)}
        assert logged == {f"{name}/{Path(f).name}" for f in files if Path(f).exists()}

    gen, imp = children["generate"].data.metrics, children["import"].data.metrics
    assert gen["summary.sardet.train.images"] == 2
    assert gen["summary.dota.val.images"] == 1
    assert imp["summary.images"] == 9
    assert imp["summary.rows"] == runs.first["result"]["import"]["rows"] > 0

    # data lineage: content hash of each data input, on the child run of the stage reading it
    raw = Path(runs.overrides["paths.raw"])
    assert children["import"].data.tags[f"babelrs.data_hash.{raw}"] == path_hash(raw)
    assert not any(t.startswith("babelrs.data_hash.") for t in children["generate"].data.tags)

    # lineage tags on every run
    for run in (parent, *children.values()):
        tags = run.data.tags
        assert tags["git.commit"] == runs.lineage["git.commit"]
        assert re.fullmatch(r"[0-9a-f]{40}", tags["git.commit"])
        assert tags["git.dirty"] in ("true", "false")
        assert tags["babelrs.params_hash"] == params_hash(flatten(params))
        assert tags["prefect.flow_run_id"] == flow_run_id
        assert tags["babelrs.runner"] == "prefect"
    # the same lineage as every other runner records (tests/pipeline/test_runner.py)
    assert_stage_lineage(children["import"], stage("import"), params, "prefect")


def test_artifacts_go_to_s3_through_the_server(runs: SimpleNamespace, servers: Servers) -> None:
    """The server proxies artifacts to ``s3://mlflow/``; the client holds no S3 credentials."""
    client = mlflow.MlflowClient(servers.mlflow.url)
    parent_id = runs.first["result"]["mlflow_parent_run_id"]
    note = runs.work / "lineage.json"
    note.write_text(json.dumps(client.get_run(parent_id).data.tags, sort_keys=True))
    client.log_artifact(parent_id, str(note), "checks")
    assert [a.path for a in client.list_artifacts(parent_id, "checks")] == ["checks/lineage.json"]
    keys = bucket_keys(servers.s3, servers.bucket)
    assert any(k.endswith(f"{parent_id}/artifacts/checks/lineage.json") for k in keys), keys


def test_prefect_has_the_flow_and_task_runs(runs: SimpleNamespace, servers: Servers) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(servers.prefect.url) as client:
        flow_run = client.read_flow_run(UUID(runs.first["flow_run_id"]))
        flow = client.read_flow(flow_run.flow_id)
    assert flow.name == "babelrs-retrain"
    assert flow_run.state is not None and flow_run.state.name == "Completed"
    assert flow_run.parameters["stages"] == STAGES
    assert task_states(servers.prefect.url, runs.first["flow_run_id"]) == {
        "generate": "Completed",
        "import": "Completed",
    }
    # the run's summary (markdown) and a link to its MLflow parent run, as Prefect artifacts
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    only_this = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
    with SyncPrefectClient(servers.prefect.url) as client:
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=only_this)}
    parent_id = runs.first["result"]["mlflow_parent_run_id"]
    summary = artifacts["babelrs-retrain-summary"]
    assert summary.type == "markdown" and f"| pipeline (parent) | `{parent_id}` |" in summary.data
    child_id = runs.first["result"]["import"]["mlflow_run_id"]
    assert f"| import | `{child_id}` |" in summary.data
    link = artifacts["babelrs-retrain-mlflow"]
    assert link.data.startswith("[MLflow parent run](http://127.0.0.1:")
    assert link.data.endswith(f"/runs/{parent_id})")


def test_second_run_hits_the_task_cache(runs: SimpleNamespace, servers: Servers) -> None:
    assert task_states(servers.prefect.url, runs.second["flow_run_id"]) == {
        "generate": "Cached",
        "import": "Cached",
    }
    # a cached stage makes no child run: its result points at the run that made the output
    for name in STAGES:
        assert (
            runs.second["result"][name]["mlflow_run_id"]
            == runs.first["result"][name]["mlflow_run_id"]
        )
    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parent_id = runs.second["result"]["mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert child_runs(client, exp.experiment_id, parent_id) == {}


def test_changing_an_import_key_reruns_only_import(runs: SimpleNamespace, servers: Servers) -> None:
    assert task_states(servers.prefect.url, runs.third["flow_run_id"]) == {
        "generate": "Cached",
        "import": "Completed",
    }
    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parent_id = runs.third["result"]["mlflow_parent_run_id"]
    children = child_runs(client, exp.experiment_id, parent_id)
    assert list(children) == ["import"]
    assert children["import"].data.params[IMPORT_ONLY_KEY] == "2.0"
    assert children["import"].data.tags["prefect.flow_run_id"] == runs.third["flow_run_id"]


def test_flow_run_is_named_after_its_overrides(runs: SimpleNamespace, servers: Servers) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(servers.prefect.url) as client:
        third = client.read_flow_run(UUID(runs.third["flow_run_id"]))
    assert third.name == run_name("retrain", runs.changed, 0)
    assert third.name.startswith("retrain-") and third.name.endswith("-seed0")
    assert "-min_box_size_px2.0-" in third.name and "-rawraw-" in third.name
    assert run_name("retrain", {"finetune.iters": 1500}, 0) == "retrain-iters1500-seed0"


def test_library_logs_reach_the_task_log(runs: SimpleNamespace, servers: Servers) -> None:
    """Records of the babelrs_core loggers (here: why the stage was not recorded in dvc.lock,
    the flow ran with overrides) are in the Prefect task log, not only on a console."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    only_this = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(runs.first["flow_run_id"])]))
    with SyncPrefectClient(servers.prefect.url) as client:
        logs = client.read_logs(log_filter=only_this, limit=200)
    lines = [log.message for log in logs if log.task_run_id is not None]
    expected = "stage import: not recorded in dvc.lock (params differ from params.yaml (overrides))"
    assert f"babelrs_core.pipeline.vcs: {expected}" in lines, lines[-20:]


@pytest.fixture(scope="module")
def option_runs(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run whose generate stage has a 0.5 s timeout, and one keeping task results in a folder
    of its own (orchestration.result_storage); both in one subprocess."""
    work = tmp_path_factory.mktemp("options")
    env = prefect_env(
        work / "prefect-home", servers.prefect.url, MLFLOW_TRACKING_URI=servers.mlflow.url
    )
    timeout = {**tiny_overrides(work / "timeout", "orchestration-timeout"),
               "orchestration.stage_timeout_s": {"generate": 0.5}}  # fmt: skip
    storage = {**tiny_overrides(work / "storage", "orchestration-storage"),
               "orchestration.result_storage": str(work / "results")}  # fmt: skip
    calls = [{"overrides": ov, "stages": STAGES} for ov in (timeout, storage)]
    timed_out, stored = run_flows(calls, env)
    return {"work": work, "timeout": timed_out, "storage": stored}


def test_a_stage_past_its_timeout_fails_the_flow(
    option_runs: dict[str, Any], servers: Servers
) -> None:
    result = option_runs["timeout"]
    assert result["state"] == "FAILED"
    assert task_states(servers.prefect.url, result["flow_run_id"]) == {"generate": "TimedOut"}


def test_task_results_go_to_the_configured_storage(
    option_runs: dict[str, Any], servers: Servers
) -> None:
    result = option_runs["storage"]
    assert result["state"] == "COMPLETED", result
    assert task_states(servers.prefect.url, result["flow_run_id"]) == {
        "generate": "Completed",
        "import": "Completed",
    }
    stored = [p for p in (option_runs["work"] / "results").rglob("*") if p.is_file()]
    texts = "\n".join(p.read_text(errors="replace") for p in stored)
    assert len(stored) >= 2 and result["result"]["import"]["manifest"] in texts


INVALID = {
    "bad-value": ({"overrides": {"soi_mini.sardet.splits": {"train": -1}}}, "sardet.splits.train"),
    "unknown-key": ({"overrides": {"importers.min_box_size": 2.0}}, "unknown key"),
    "unknown-stage": ({"stages": ["generate", "no-such-stage"]}, "unknown stage 'no-such-stage'"),
}


@pytest.fixture(scope="module")
def invalid_runs(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One flow run per invalid input, all in one subprocess (one interpreter start)."""
    work = tmp_path_factory.mktemp("invalid")
    env = prefect_env(
        work / "prefect-home", servers.prefect.url, MLFLOW_TRACKING_URI=servers.mlflow.url
    )
    calls = []
    for case, (kwargs, _) in INVALID.items():
        base = tiny_overrides(work / case, f"orchestration-invalid-{case}")
        overrides = {**base, **kwargs.get("overrides", {})}
        calls.append({"overrides": overrides, "stages": kwargs.get("stages", STAGES)})
    return {"work": work, **dict(zip(INVALID, run_flows(calls, env), strict=True))}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_input_fails_before_any_task(
    case: str, invalid_runs: dict[str, Any], servers: Servers
) -> None:
    result, message = invalid_runs[case], INVALID[case][1]
    assert result["state"] == "FAILED"
    assert message in result["error"], result["error"]
    assert task_states(servers.prefect.url, result["flow_run_id"]) == {}
    assert not (invalid_runs["work"] / case / "raw").exists()
    # nothing tracked either: the experiment was never created
    client = mlflow.MlflowClient(servers.mlflow.url)
    assert client.get_experiment_by_name(f"orchestration-invalid-{case}") is None
