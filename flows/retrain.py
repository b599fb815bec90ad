"""``babelrs-retrain``: the Prefect 3 flow that runs the pipeline stages in order.

A thin wrapper: each task calls :func:`babelrs_core.runner.run_stage`, the same code path as
``babelrs stage <name>`` and ``dvc repro``. What Prefect adds:

* tasks named after the stages, tagged ``gpu`` where they train (a tag concurrency limit, set by
  ``make serve-scheduler`` from ``orchestration.gpu_concurrency``, keeps two runs off one GPU);
* retries for transient failures only (never for bad data or bad params);
* results persisted as JSON and a cache keyed on the stage's params subset and the content hashes
  of its inputs and code, so an unchanged stage is skipped as DVC would skip it (a stage whose
  outputs were deleted is re-run);
* flow parameters that override params.yaml keys, validated like the file;
* training stages run as a ``torchrun`` subprocess when ``params.distributed`` asks for more than
  one process (:func:`babelrs_core.runner.launch_distributed`): its output streams into the task
  log, a non-zero exit fails the task with the status and the log tail, and rank 0 creates the
  stage's MLflow run under the parent run id passed on its command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext

from babelrs_core.config import ConfigError, Params, load_params, parse_params
from babelrs_core.errors import BabelrsError
from babelrs_core.io.atomic import DiskFullError
from babelrs_core.pipeline import PIPELINE, StageSpec, cache_key, stage
from babelrs_core.runner import launch_distributed, lineage_tags, run_stage, wants_torchrun
from babelrs_core.tracking import Tracker, path_hash

#: Errors that a retry cannot fix: bad data, bad params, bad files.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    ValueError,
    KeyError,
    FileNotFoundError,
)


def _stage_cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    params = parse_params(arguments["params_data"])
    return cache_key(stage(arguments["name"]), params, path_hash)


def _retry_transient(task_: Any, task_run: Any, state: Any) -> bool:
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BabelrsError | DiskFullError):
        return bool(getattr(exc, "transient", False))
    return not isinstance(exc, PERMANENT_ERRORS)


@task(
    cache_key_fn=_stage_cache_key,
    persist_result=True,
    result_serializer="json",
    retry_condition_fn=_retry_transient,
    retry_delay_seconds=5,
)
def stage_task(
    name: str, params_data: dict[str, Any], parent_run_id: str | None, track: bool
) -> dict[str, Any]:
    """Run one stage (tracked as a child MLflow run of ``parent_run_id``)."""
    params = parse_params(params_data)
    if wants_torchrun(name, params):
        logger = get_run_logger()
        result = launch_distributed(
            name,
            params,
            track=track,
            parent_run_id=parent_run_id,
            runner="prefect",
            log=logger.info,
        )
        return json.loads(json.dumps(result, default=str))
    tracker = Tracker.from_params(params) if track else None
    # lineage: content hashes of the data inputs (babelrs.data_hash.<path> tags)
    inputs = stage(name).inputs(params) if track else []
    hashes = {str(p): path_hash(p) for p in inputs if p.exists()}
    result = run_stage(
        name,
        params,
        tracker=tracker,
        parent_run_id=parent_run_id,
        runner="prefect",
        data_hashes=hashes,
    )
    return json.loads(json.dumps(result, default=str))


def _task_for(spec: StageSpec, params: Params) -> Any:
    outputs_missing = not all(p.exists() for p in spec.outputs(params))
    return stage_task.with_options(
        name=spec.name,
        task_run_name=spec.name,
        tags=["babelrs", *(["gpu"] if spec.gpu else [])],
        retries=spec.retries,
        refresh_cache=outputs_missing,
    )


@flow(name="babelrs-retrain", log_prints=True)
def babelrs_retrain(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run the pipeline (all stages, or ``stages``) with ``overrides`` applied to params.yaml."""
    logger = get_run_logger()
    params = load_params(Path(params_path), overrides)  # invalid params fail before any task
    selected = [stage(n) for n in stages] if stages else PIPELINE
    tracker = Tracker.from_params(params) if track else None
    parent = tracker.start("babelrs-retrain", lineage_tags(params, "prefect")) if tracker else None
    results: dict[str, Any] = {}
    ok = False
    try:
        if tracker and parent:
            from babelrs_core.config import flatten

            tracker.log_params(parent, flatten(params))
        data = params.model_dump(mode="json")
        for spec in selected:
            logger.info("stage %s: start", spec.name)
            results[spec.name] = _task_for(spec, params)(spec.name, data, parent, track)
            logger.info("stage %s: done", spec.name)
        ok = True
        _publish(results, tracker, parent)
    finally:
        if tracker and parent:
            tracker.finish(parent, ok)
    results["mlflow_parent_run_id"] = parent
    return results


def _publish(results: dict[str, Any], tracker: Tracker | None, parent: str | None) -> None:
    """The run's headline numbers on the parent MLflow run, its summary as a Prefect markdown
    artifact, and a link artifact to the parent run when MLflow is a server."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from babelrs_core.summary import headline_metrics, summary_markdown
    from babelrs_core.tracking import redact

    if tracker and parent:
        with tracker.metric_sink(parent) as sink:
            sink.log(0, headline_metrics(results))
    what = "evaluation, gate decision, validation, MLflow runs"
    create_markdown_artifact(summary_markdown(results, parent), key="babelrs-retrain-summary",
                             description=what)  # fmt: skip
    if tracker and parent and tracker.uri.startswith(("http://", "https://")):
        link = f"{tracker.uri.rstrip('/')}/#/experiments/{tracker.experiment_id}/runs/{parent}"
        create_link_artifact(redact(link), link_text="MLflow parent run",
                             key="babelrs-retrain-mlflow")  # fmt: skip


if __name__ == "__main__":
    babelrs_retrain()
