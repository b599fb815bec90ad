"""``babelrs-retrain``: the Prefect 3 flow that runs the pipeline stages in order.

A thin wrapper: each task calls :func:`babelrs_core.pipeline.runner.execute_stage`, the same code
path as ``babelrs stage <name>``, ``dvc repro`` and the ablation. What Prefect adds:

* tasks named after the stages, tagged ``gpu`` where they train (a tag concurrency limit, set by
  ``make serve-scheduler`` from ``orchestration.gpu_concurrency``, keeps two runs off one GPU),
  with a timeout per stage (``orchestration.stage_timeout_s``);
* retries for transient failures only (never for bad data or bad params); the tags, retries and
  timeouts are those of every babelrs task that runs stages (``flows/common.py``, shared with the
  ``babelrs-ablation`` flow);
* results persisted as JSON (``orchestration.result_storage``: local, or a storage block such as
  S3 for workers on other machines) and a cache keyed on the stage's params subset and the content
  hashes of its inputs and code, so an unchanged stage is skipped as DVC would skip it (a stage
  whose outputs were deleted is re-run);
* after a stage runs, ``dvc commit`` records it in ``dvc.lock`` (when the project is a DVC
  repository), so ``dvc status`` and ``dvc repro`` agree with what the flow did;
* flow parameters that override params.yaml keys, validated like the file, and a flow-run name
  that says which (``retrain-iters1500-seed0``);
* library logs (mmengine, babelrs_core) in the task logs; a markdown summary and a link to the
  MLflow parent run as Prefect artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext

from babelrs_core.config import ConfigError, Params, load_params, parse_params
from babelrs_core.pipeline.runner import execute_stage
from babelrs_core.pipeline.runners import log_headline, parent_run
from babelrs_core.pipeline.specs import PIPELINE, STAGES, StageSpec, cache_key, stage
from babelrs_core.pipeline.vcs import commit_stage
from babelrs_core.tracking import Tracker
from flows.common import flow_run_namer, library_logs_to_task_log, stage_task_options


def _stage_cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    params = parse_params(arguments["params_data"])
    return cache_key(stage(arguments["name"]), params)


@task(cache_key_fn=_stage_cache_key, persist_result=True, result_serializer="json")
def stage_task(
    name: str, params_data: dict[str, Any], parent_run_id: str | None, track: bool
) -> dict[str, Any]:
    """Run one stage (tracked as a child MLflow run of ``parent_run_id``), then record it in
    ``dvc.lock``."""
    params = parse_params(params_data)
    spec = stage(name)
    logger = get_run_logger()
    tracker = Tracker.from_params(params) if track else None
    with library_logs_to_task_log():
        result = execute_stage(
            spec,
            params,
            tracker=tracker,
            runner="prefect",
            parent_run_id=parent_run_id,
            log=logger.info,
        )
        committed = commit_stage(spec, params)
    if committed:
        logger.info("stage %s: recorded in dvc.lock", name)
    return json.loads(json.dumps(result, default=str))


def _result_storage(params: Params) -> Any:
    where = params.orchestration.result_storage
    if where is None:
        return None
    return where.removeprefix("block:") if where.startswith("block:") else Path(where)


def _task_for(spec: StageSpec, params: Params) -> Any:
    outputs_missing = not all(p.exists() for p in spec.outputs(params))
    options: dict[str, Any] = {}
    storage = _result_storage(params)
    if storage is not None:
        options["result_storage"] = storage
    return stage_task.with_options(
        name=spec.name,
        task_run_name=spec.name,
        refresh_cache=outputs_missing,
        **stage_task_options([spec], params),
        **options,
    )


@flow(name="babelrs-retrain", log_prints=True, flow_run_name=flow_run_namer("retrain"))
def babelrs_retrain(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run the pipeline (all stages, or ``stages``) with ``overrides`` applied to params.yaml."""
    logger = get_run_logger()
    params = load_params(Path(params_path), overrides)  # invalid params fail before any task
    unknown = sorted(set(params.orchestration.stage_timeout_s) - set(STAGES))
    if unknown:
        raise ConfigError(f"orchestration.stage_timeout_s: unknown stage(s) {', '.join(unknown)}")
    selected = [stage(n) for n in stages] if stages else PIPELINE
    tracker = Tracker.from_params(params) if track else None
    results: dict[str, Any] = {}
    with parent_run(params, tracker, "prefect") as parent:
        data = params.model_dump(mode="json")
        for spec in selected:
            logger.info("stage %s: start", spec.name)
            results[spec.name] = _task_for(spec, params)(spec.name, data, parent, track)
            logger.info("stage %s: done", spec.name)
        _publish(results, tracker, parent)
    results["mlflow_parent_run_id"] = parent
    return results


def run_pipeline(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """The ``prefect`` pipeline runner (entry point ``babelrs.runners``): the flow, run now."""
    return babelrs_retrain(params_path, overrides, stages, track)


def _publish(results: dict[str, Any], tracker: Tracker | None, parent: str | None) -> None:
    """The run's headline numbers on the parent MLflow run, its summary as a Prefect markdown
    artifact, and a link artifact to the parent run when MLflow is a server."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from babelrs_core.summary import summary_markdown
    from babelrs_core.tracking import redact

    log_headline(tracker, parent, results)
    what = "evaluation, gate decision, validation, MLflow runs"
    create_markdown_artifact(
        summary_markdown(results, parent), key="babelrs-retrain-summary", description=what
    )
    if tracker and parent and tracker.uri.startswith(("http://", "https://")):
        link = f"{tracker.uri.rstrip('/')}/#/experiments/{tracker.experiment_id}/runs/{parent}"
        create_link_artifact(
            redact(link), link_text="MLflow parent run", key="babelrs-retrain-mlflow"
        )


if __name__ == "__main__":
    babelrs_retrain()
