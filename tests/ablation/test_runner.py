"""``babelrs ablation run`` reaches its scheduler, the ``babelrs-ablation`` flow, through an entry
point (the core imports no orchestrator), and the flow's tasks carry the retraining flow's options:
the ``gpu`` tag, retries for transient errors only, the stages' timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.ablation.run import get_runner, runner_names
from babelrs_core.config import ConfigError, load_params
from babelrs_core.pipeline import stage

ROOT = Path(__file__).resolve().parents[2]


def test_the_ablation_runner_is_the_flow_reached_through_its_entry_point() -> None:
    from flows.ablation import run_ablation

    assert "prefect" in runner_names()
    assert get_runner("prefect") is run_ablation
    with pytest.raises(ConfigError, match=r"no ablation runner 'airflow'; installed: prefect"):
        get_runner("airflow")


def test_ablation_tasks_have_the_retraining_flows_gpu_tag_retries_and_timeouts() -> None:
    from flows.common import retry_transient, stage_task_options
    from flows.retrain import _task_for

    params = load_params(ROOT / "params.yaml")
    timeouts = params.orchestration.stage_timeout_s
    pretrain = stage_task_options([stage("pretrain")], params)
    finetune = stage_task_options([stage("finetune"), stage("evaluate")], params)  # one job
    retrain = _task_for(stage("finetune"), params)  # the retraining flow's fine-tuning task
    assert set(pretrain["tags"]) == set(finetune["tags"]) == set(retrain.tags) == {"babelrs", "gpu"}
    for options in (pretrain, finetune):
        assert options["retry_condition_fn"] is retrain.retry_condition_fn is retry_transient
        assert options["retry_delay_seconds"] == retrain.retry_delay_seconds
    assert finetune["retries"] == retrain.retries == stage("finetune").retries >= 1
    assert pretrain["retries"] == stage("pretrain").retries >= 1
    assert pretrain["timeout_seconds"] == timeouts["pretrain"]
    assert finetune["timeout_seconds"] == timeouts["finetune"] + timeouts["evaluate"]
    assert retrain.timeout_seconds == timeouts["finetune"]


@pytest.mark.parametrize("workers", [1, 3])
def test_jobs_run_in_a_pool_of_ablation_workers_processes(workers: int) -> None:
    from prefect.task_runners import ProcessPoolTaskRunner

    from flows.ablation import task_runner

    pool = task_runner(workers)  # one worker too: a timeout needs the task in its own process
    assert isinstance(pool, ProcessPoolTaskRunner) and pool._max_workers == workers
