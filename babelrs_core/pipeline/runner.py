"""Run one stage: the single code path behind the CLI, ``dvc repro``, the Prefect flow and the
ablation.

:func:`execute_stage` runs the stage function held by the stage's spec, under the stage's output
locks, inside an MLflow run (a child of the pipeline's parent run when there is one) that gets the
params subset the stage reads, lineage tags (git commit, params hash, runner, Prefect flow run, the
content hash of every data input), the manifest as a dataset input, the step metrics the stage
emits through :func:`babelrs_core.tracking.log_step`, its summary numbers and its metric / plot /
artifact files. When ``params.distributed`` asks for several processes it starts them with
``torchrun`` running :mod:`babelrs_core.pipeline.worker`, which calls :func:`execute_stage` again
in every rank.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from babelrs_core import distributed as dist_util
from babelrs_core import settings_env
from babelrs_core.config import Params, flatten, flatten_dict
from babelrs_core.io.hashing import path_hash
from babelrs_core.io.output_lock import output_locks
from babelrs_core.logs import get_logger
from babelrs_core.pipeline.specs import StageSpec, params_subset
from babelrs_core.tracking import (
    Tracker,
    flatten_numbers,
    git_lineage,
    params_hash,
    prefect_lineage,
    redact,
)

PARENT_ENV = "BABELRS_PARENT_RUN_ID"
_log = get_logger(__name__)
#: MLflow's dataset-input context of the manifest, per stage that reads it
INPUT_CONTEXT = {
    "pretrain": "training",
    "finetune": "training",
    "evaluate": "evaluation",
    "validate": "validation",
    "register": "evaluation",
}
#: tag prefix of the content hash of each data input
DATA_HASH_TAG = "babelrs.data_hash."


def wants_torchrun(spec: StageSpec, params: Params) -> bool:
    """True when ``spec`` trains with several processes and this process is not one of them
    yet (:func:`execute_stage` then launches them)."""
    return spec.distributed and params.distributed.world_size > 1 and dist_util.world_size() == 1


def execute_stage(
    spec: StageSpec,
    params: Params,
    *,
    tracker: Tracker | None = None,
    runner: str = "cli",
    parent_run_id: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run stage ``spec`` with ``params``; tracked in MLflow when ``tracker`` is enabled.

    ``runner`` names who asked (``cli``, ``dvc``, ``prefect``, ``local``, ``ablation``; a lineage
    tag), ``parent_run_id`` the MLflow run to nest under (default ``$BABELRS_PARENT_RUN_ID``),
    ``log`` where a torchrun launch streams its output, ``run_name`` / ``tags`` name the MLflow run
    and add to its tags (the ablation's variant, precision, seed). Returns the stage's JSON-able
    summary, with ``mlflow_run_id`` when tracked.
    """
    if wants_torchrun(spec, params):
        track = tracker is not None and tracker.enabled
        return _launch_distributed(spec, params, track, parent_run_id, runner, log or _log.info)
    if not dist_util.is_main():  # rank 0 holds the data locks for the whole process group
        return call_stage(spec, params, progress)
    with output_locks(
        spec.outputs(params),
        params.orchestration.output_lock_timeout_s,
        who=f"stage {spec.name}",
        inputs=spec.inputs(params),
    ):
        if tracker is None or not tracker.enabled:
            return call_stage(spec, params, progress)
        parent_run_id = parent_run_id or settings_env.read(PARENT_ENV) or None
        labels = (run_name or spec.name, dict(tags or {}))
        return _run_tracked(spec, params, tracker, parent_run_id, runner, progress, labels)


def call_stage(spec: StageSpec, params: Params, progress: bool = True) -> dict[str, Any]:
    """Call the stage function with the params (and ``progress`` where it takes one)."""
    import inspect

    kwargs: dict[str, Any] = {}
    if "progress" in inspect.signature(spec.func).parameters:
        kwargs["progress"] = progress
    result = spec.func(params, **kwargs)
    return result if isinstance(result, dict) else {"output": str(result)}


def lineage_tags(params: Params, runner: str) -> dict[str, str]:
    """Tags every babelrs run carries."""
    return {
        **git_lineage(),
        **prefect_lineage(),
        "babelrs.params_hash": params_hash(flatten(params)),
        "babelrs.runner": runner,
    }


def data_hashes(spec: StageSpec, params: Params) -> dict[str, str]:
    """Content hash of every data input of ``spec`` that exists (remembered per file state, so
    the Prefect cache key and these tags read the data once)."""
    return {str(p): path_hash(p) for p in spec.inputs(params) if p.exists()}


def _run_tracked(
    spec: StageSpec,
    params: Params,
    tracker: Tracker,
    parent_run_id: str | None,
    runner: str,
    progress: bool,
    labels: tuple[str, dict[str, str]],
) -> dict[str, Any]:
    run_name, extra_tags = labels
    hashes = data_hashes(spec, params)
    tags = {**extra_tags, **lineage_tags(params, runner), "babelrs.stage": spec.name}
    tags.update({f"{DATA_HASH_TAG}{path}": digest for path, digest in hashes.items()})
    run_id = tracker.start(run_name, tags, parent_run_id)
    error: BaseException | None = None
    try:
        tracker.log_params(run_id, flatten_dict(params_subset(params, spec.params)))
        manifest = Path(params.paths.manifest)
        if str(manifest) in hashes and manifest.is_file():  # the data this run learns from
            context = INPUT_CONTEXT.get(spec.name, spec.name)
            tracker.log_table_input(run_id, manifest, context, hashes[str(manifest)])
        start = time.perf_counter()
        with tracker.metric_sink(run_id) as sink:
            result = call_stage(spec, params, progress)
            sink.log(0, {f"summary.{k}": v for k, v in flatten_numbers(result).items()})
            sink.log(0, {"stage_seconds": time.perf_counter() - start})
        files = [spec.resolve(p, params) for p in (*spec.metrics, *spec.plots)]
        files += [spec.resolve(p, params) for p in spec.extra.get("artifacts", ())]
        tracker.log_artifacts(run_id, [Path(f) for f in files], artifact_dir=spec.name)
        result["mlflow_run_id"] = run_id
        return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        tracker.finish(run_id, error is None, error)


def _launch_distributed(
    spec: StageSpec,
    params: Params,
    track: bool,
    parent_run_id: str | None,
    runner: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``spec`` as ``torchrun ... -m babelrs_core.pipeline.worker`` with these params
    (written to a temporary file); every output line goes to ``log`` (secrets redacted). Rank 0
    creates the MLflow run, a child of ``parent_run_id``, and its result is returned; on a node
    without rank 0 (``nnodes > 1``), this node's local rank 0 note (``main_rank_here: false``). A
    failure raises :class:`~babelrs_core.distributed.DistributedLaunchError` with the status and
    log tail.
    """
    from babelrs_core.pipeline import worker

    with tempfile.TemporaryDirectory(prefix=f"babelrs-{spec.name}-") as tmp:
        params_file, result_file = Path(tmp) / "params.yaml", Path(tmp) / "result.json"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        args = worker.arguments(spec.name, params_file, result_file, track, parent_run_id, runner)
        cmd = dist_util.torchrun_command(params.distributed, args)
        log(f"stage {spec.name}: {' '.join(cmd)}")
        dist_util.run_streaming(cmd, lambda line: log(redact(line)))
        if not result_file.exists():
            raise RuntimeError(
                f"stage {spec.name}: torchrun succeeded but no rank of this node wrote a result"
            )
        return json.loads(result_file.read_text())
