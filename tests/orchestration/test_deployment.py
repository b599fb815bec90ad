"""``prefect.yaml`` deployed to a real Prefect server and run by a real ``process`` worker.

``prefect deploy -n weekly-retrain --no-prompt`` from the repository root (tiny flow parameters
given as a deployment parameter override, so even a scheduled run would be tiny), then
``prefect deployment run`` and ``prefect worker start --pool babelrs-process --run-once`` started
from the repository root: the pull step puts the flow run in the checkout, the flow run
completes, its MLflow parent run carries its flow run id, and the deployment lists the weekly
cron schedule.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from uuid import UUID

import mlflow
import pytest
import yaml

from babelrs_core.tracking import git_lineage
from tests.orchestration.conftest import Servers
from tests.orchestration.servers_prefect_mlflow import BIN, ROOT, prefect_env, run_cli
from tests.orchestration.test_flow_server import STAGES, task_states, tiny_overrides

POOL = "babelrs-process"
DEPLOYMENT = "babelrs-retrain/weekly-retrain"
ABLATION = "babelrs-ablation/ablation"
EXPERIMENT = "orchestration-deployment"


def test_prefect_yaml_declares_the_weekly_deployment() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (dep,) = [d for d in config["deployments"] if d["name"] == "weekly-retrain"]
    assert dep["entrypoint"] == "flows/retrain.py:babelrs_retrain"
    assert dep["work_pool"]["name"] == POOL
    assert dep["schedules"][0]["cron"] == "0 3 * * 1"
    assert not config.get("build") and not config.get("push")
    (step,) = config["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $PWD }}"


def test_prefect_yaml_declares_the_ablation_deployment() -> None:
    import inspect

    from flows.ablation import babelrs_ablation

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (dep,) = [d for d in config["deployments"] if d["name"] == "ablation"]
    assert dep["entrypoint"] == "flows/ablation.py:babelrs_ablation"
    assert dep["work_pool"]["name"] == POOL
    assert not dep.get("schedules")  # run on demand
    assert list(dep["parameters"]) == list(inspect.signature(babelrs_ablation.fn).parameters)


@pytest.mark.slow
def test_deploy_run_and_worker(servers: Servers, tmp_path: Path) -> None:
    env = prefect_env(
        tmp_path / "prefect-home", servers.prefect.url, MLFLOW_TRACKING_URI=servers.mlflow.url
    )
    env.update(PWD=str(ROOT), PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5")
    prefect = str(BIN / "prefect")
    run_cli([prefect, "work-pool", "create", POOL, "--type", "process"], env)

    params = {"overrides": tiny_overrides(tmp_path / "work", EXPERIMENT), "stages": STAGES}
    before = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    run_cli(
        [prefect, "deploy", "-n", "weekly-retrain", "--no-prompt", "--params", json.dumps(params)],
        env,
        timeout=300,
    )
    after = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "prefect.yaml" not in after.replace(before, "")  # deploying does not rewrite the file

    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(servers.prefect.url) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.work_pool_name == POOL
    assert deployment.entrypoint == "flows/retrain.py:babelrs_retrain"
    assert deployment.parameters["stages"] == STAGES
    crons = [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules]
    assert crons == [("0 3 * * 1", "UTC", True)]
    # `{{ $PWD }}` is resolved by `prefect deploy`: the checkout it ran in
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]

    started = run_cli([prefect, "deployment", "run", DEPLOYMENT], env)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", started.stdout)
    assert found, started.stdout
    flow_run_id = found.group(1)

    worker = subprocess.run(
        [prefect, "worker", "start", "--pool", POOL, "--run-once", "--name", "test-worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    with SyncPrefectClient(servers.prefect.url) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
    log = f"{worker.stdout[-4000:]}\n{worker.stderr[-6000:]}"
    assert flow_run.state is not None and flow_run.state.name == "Completed", log
    assert flow_run.deployment_id == deployment.id
    assert task_states(servers.prefect.url, flow_run_id) == {
        "generate": "Completed",
        "import": "Completed",
    }
    assert (tmp_path / "work" / "manifest.parquet").is_file()

    client = mlflow.MlflowClient(servers.mlflow.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    tracked = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'"
    )
    (parent,) = [r for r in tracked if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags.get("babelrs.stage") for r in tracked if r is not parent) == sorted(
        STAGES
    )
    assert parent.info.status == "FINISHED"
    # the flow ran in the checkout (the pull step): git lineage is the repository's
    assert parent.data.tags["git.commit"] == git_lineage(ROOT)["git.commit"]


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.slow
def test_deploy_the_ablation(servers: Servers, tmp_path: Path) -> None:
    """``prefect deploy -n ablation`` from the repository root: the flow loads, the deployment
    has its parameters, the pool and no schedule."""
    env = prefect_env(tmp_path / "prefect-home", servers.prefect.url)
    env.update(PWD=str(ROOT))
    prefect = str(BIN / "prefect")
    # the pool exists when test_deploy_run_and_worker ran first (same server)
    run_cli([prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
    before = _git_status()
    run_cli([prefect, "deploy", "-n", "ablation", "--no-prompt"], env, timeout=300)
    assert "prefect.yaml" not in _git_status().replace(before, "")

    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(servers.prefect.url) as client:
        deployment = client.read_deployment_by_name(ABLATION)
    assert deployment.entrypoint == "flows/ablation.py:babelrs_ablation"
    assert deployment.work_pool_name == POOL
    assert deployment.schedules == []
    assert deployment.parameters == {
        "params_path": "params.yaml", "overrides": {}, "track": True, "device": None
    }  # fmt: skip
    schema = deployment.parameter_openapi_schema or {}
    assert set(schema["properties"]) == {"params_path", "overrides", "track", "device"}
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
