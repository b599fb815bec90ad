"""Run one stage with tracking: the single code path behind the CLI, DVC and Prefect runners.

``run_stage`` calls the stage function of :mod:`babelrs_core.stages` named by the stage's spec,
inside an MLflow run (a child of the pipeline's parent run when there is one) that gets the params
subset the stage reads, lineage tags, the step metrics the stage emits through
:func:`babelrs_core.tracking.log_step`, its summary numbers and its metric / plot files.
"""

from __future__ import annotations

import inspect
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from babelrs_core import distributed as dist_util
from babelrs_core import settings_env, stages
from babelrs_core.config import Params, flatten
from babelrs_core.io.output_lock import output_locks
from babelrs_core.pipeline import StageSpec, params_subset, stage
from babelrs_core.tracking import (
    Tracker,
    flatten_numbers,
    git_lineage,
    params_hash,
    path_hash,
    prefect_lineage,
)

PARENT_ENV = "BABELRS_PARENT_RUN_ID"
#: MLflow's dataset-input context of the manifest, per stage that reads it
INPUT_CONTEXT = {"pretrain": "training", "finetune": "training", "evaluate": "evaluation",
                 "validate": "validation", "register": "evaluation"}  # fmt: skip


def wants_torchrun(name: str, params: Params) -> bool:
    """True when stage ``name`` trains with several processes and this process is not one of
    them yet (the runners then call :func:`launch_distributed`)."""
    return (
        stage(name).distributed
        and params.distributed.world_size > 1
        and dist_util.world_size() == 1
    )


def launch_distributed(
    name: str,
    params: Params,
    *,
    track: bool = True,
    parent_run_id: str | None = None,
    runner: str = "cli",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run stage ``name`` as ``torchrun ... -m babelrs_core.cli stage <name>`` with these params
    (written to a temporary file); every output line goes to ``log`` (secrets redacted). Rank 0
    creates the MLflow run, a child of ``parent_run_id``, and its result is returned. A failure
    raises :class:`~babelrs_core.distributed.DistributedLaunchError` with the status and log tail.
    """
    from babelrs_core.tracking import redact

    with tempfile.TemporaryDirectory(prefix=f"babelrs-{name}-") as tmp:
        params_file, result_file = Path(tmp) / "params.yaml", Path(tmp) / "result.json"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        args = ["stage", name, "--params", str(params_file), "--quiet", "--runner", runner]
        args += ["--result-json", str(result_file), "--track" if track else "--no-track"]
        if parent_run_id:
            args += ["--parent-run-id", parent_run_id]
        cmd = dist_util.torchrun_command(params.distributed, args)
        log(f"stage {name}: {' '.join(cmd)}")
        dist_util.run_streaming(cmd, lambda line: log(redact(line)))
        if not result_file.exists():
            raise RuntimeError(f"stage {name}: torchrun succeeded but rank 0 wrote no result")
        return json.loads(result_file.read_text())


def call_stage(spec: StageSpec, params: Params, progress: bool = True) -> dict[str, Any]:
    """Call the stage function with the params (and ``progress`` where it takes one)."""
    func = getattr(stages, spec.func)
    kwargs: dict[str, Any] = {}
    if "progress" in inspect.signature(func).parameters:
        kwargs["progress"] = progress
    result = func(params, **kwargs)
    return result if isinstance(result, dict) else {"output": str(result)}


def lineage_tags(params: Params, runner: str) -> dict[str, str]:
    """Tags every babelrs run carries."""
    return {
        **git_lineage(),
        **prefect_lineage(),
        "babelrs.params_hash": params_hash(flatten(params)),
        "babelrs.runner": runner,
    }


def run_stage(
    name: str,
    params: Params,
    *,
    tracker: Tracker | None = None,
    parent_run_id: str | None = None,
    runner: str = "cli",
    progress: bool = True,
    data_hashes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run stage ``name``; tracked in MLflow when ``tracker`` is given."""
    spec = stage(name)
    if not dist_util.is_main():  # rank 0 holds the data locks for the whole process group
        return call_stage(spec, params, progress)
    with output_locks(spec.outputs(params), params.orchestration.output_lock_timeout_s,
                      who=f"stage {name}", inputs=spec.inputs(params)):  # fmt: skip
        return _run_tracked(spec, params, tracker, parent_run_id, runner, progress, data_hashes)


def _run_tracked(
    spec: StageSpec,
    params: Params,
    tracker: Tracker | None,
    parent_run_id: str | None,
    runner: str,
    progress: bool,
    data_hashes: dict[str, str] | None,
) -> dict[str, Any]:
    name = spec.name
    if tracker is None or not tracker.enabled:
        return call_stage(spec, params, progress)
    parent_run_id = parent_run_id or settings_env.read(PARENT_ENV) or None
    tags = {**lineage_tags(params, runner), "babelrs.stage": name}
    for path, digest in (data_hashes or {}).items():
        tags[f"babelrs.data_hash.{path}"] = digest
    run_id = tracker.start(name, tags, parent_run_id)
    tracker.log_params(run_id, _flat(params_subset(params, spec.params)))
    manifest = Path(params.paths.manifest)
    if manifest in spec.inputs(params) and manifest.is_file():  # the data this run learns from
        digest = (data_hashes or {}).get(str(manifest)) or path_hash(manifest)
        tracker.log_table_input(run_id, manifest, INPUT_CONTEXT.get(name, name), digest)
    ok = False
    start = time.perf_counter()
    try:
        with tracker.metric_sink(run_id) as sink:
            result = call_stage(spec, params, progress)
            sink.log(0, {f"summary.{k}": v for k, v in flatten_numbers(result).items()})
            sink.log(0, {"stage_seconds": time.perf_counter() - start})
        files = [spec.resolve(p, params) for p in (*spec.metrics, *spec.plots)]
        files += [spec.resolve(p, params) for p in spec.extra.get("artifacts", ())]
        tracker.log_artifacts(run_id, [Path(f) for f in files], artifact_dir=name)
        ok = True
        result["mlflow_run_id"] = run_id
        return result
    finally:
        tracker.finish(run_id, ok)


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for k, v in _flat(value).items():
                out[f"{key}.{k}"] = v
        else:
            out[key] = value
    return out
