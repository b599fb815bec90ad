"""``babelrs ablation run``: execute a plan with up to ``ablation.workers`` runs at once, track
it in MLflow and write the report.

Work is scheduled as it becomes possible: the pretraining runs and the fine-tunings that need none
(imagenet, scratch) start first; a variant's fine-tunings start as soon as its pretraining is done.
Each run executes in its own worker process (``workers > 1``) or in this process (``workers: 1``);
finished runs are reused, interrupted ones resume. MLflow gets one parent run
``babelrs-ablation`` and a child run per pretraining and fine-tuning run (tags ``babelrs.variant``,
``babelrs.precision``, ``babelrs.seed``), logged from the run's files by this process, so workers
never talk to MLflow. A failed run is recorded and the others go on; the command fails at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from babelrs_core.ablation import jobs
from babelrs_core.ablation.plan import FinetuneJob, Plan, PretrainJob, build_plan
from babelrs_core.ablation.report import RUN_JSON, write_report
from babelrs_core.config import Params, flatten
from babelrs_core.errors import BabelrsError
from babelrs_core.io.atomic import write_json
from babelrs_core.logs import get_logger

PARENT_NAME = "babelrs-ablation"


_log = get_logger(__name__)


class AblationError(BabelrsError, RuntimeError):
    """Some runs of the ablation failed (the report lists them)."""


class _Inline:
    """An executor that runs each call at submission (``workers: 1``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def ensure_data(params: Params, log: Callable[[str], None] | None = None) -> None:
    """Generate and import SOI-mini when the manifest is missing (the ablation's only input)."""
    from babelrs_core import stages

    if Path(params.paths.manifest).exists():
        return
    (log or _log.info)(
        f"ablation: {params.paths.manifest} missing, generating and importing SOI-mini first"
    )
    stages.generate(params, progress=False)
    stages.import_data(params, progress=False)


def run_ablation(
    params: Params,
    *,
    track: bool = True,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Plan, run (reusing finished runs), track and report; returns the report summary. Progress
    lines go to ``log`` (default: this module's logger)."""
    t0 = time.perf_counter()
    log = log or _log.info
    ensure_data(params, log)
    plan = build_plan(params, device)
    tracker, parent = _start_tracking(plan, log) if track else (None, None)
    errors: dict[str, str] = {}
    counts = {"ran": 0, "reused": 0}
    ok = False
    try:
        _execute(plan, parent, errors, counts, log)
        info = {
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": round(time.perf_counter() - t0, 1),
            "device": plan.device,
            "workers": params.ablation.workers,
            "threads": params.ablation.threads,
            "cpus": os.cpu_count(),
            "mlflow_parent_run_id": parent,
            **counts,
        }
        write_json(plan.root / RUN_JSON, info)
        summary = write_report(plan, errors, info)
        if tracker is not None and parent is not None:
            _log_parent(tracker, parent, plan, summary)
        ok = not errors
    finally:
        if tracker is not None and parent is not None:
            tracker.finish(parent, ok)
    if errors:
        raise AblationError(
            f"{len(errors)} ablation run(s) failed: "
            + "; ".join(f"{k}: {v}" for k, v in errors.items())
        )
    return summary


def report_ablation(params: Params, device: str | None = None) -> dict[str, Any]:
    """Regenerate the report from the outputs of earlier runs (nothing is trained)."""
    return write_report(build_plan(params, device))


def _encoder(plan: Plan, job: FinetuneJob) -> Path | None:
    return plan.pretrain_job(job.pretrain).out if job.pretrain else None


def _execute(
    plan: Plan,
    parent: str | None,
    errors: dict[str, str],
    counts: dict[str, int],
    log: Callable[[str], None],
) -> None:
    ab = plan.params.ablation
    manifest = str(plan.manifest)
    if ab.workers > 1:
        import multiprocessing as mp

        pool: Any = ProcessPoolExecutor(ab.workers, mp_context=mp.get_context("spawn"))
    else:
        pool = _Inline()
    pending: dict[Future, tuple[str, Any, float]] = {}
    ready: set[str] = set()

    def submit_finetunes(pretrain: str | None) -> None:
        for job in plan.finetunes:
            if job.pretrain != pretrain:
                continue
            if pretrain is not None and pretrain not in ready:
                errors[job.key] = f"its pretraining {pretrain} failed"
                continue
            enc = _encoder(plan, job)
            if jobs.finetune_finished(job, plan.manifest, enc):
                counts["reused"] += 1
                continue
            log(f"ablation: fine-tune {job.key} ({job.mode}, {job.params.finetune.iters} iters)")
            tracking = _tracking(parent, _finetune_tags(job))
            args = (job.params.model_dump(mode="json"), str(job.out), manifest,
                    str(enc) if enc else None, job.mode, tracking)  # fmt: skip
            pending[pool.submit(jobs.run_finetune_job, *args)] = ("ft", job, time.perf_counter())

    try:
        for pj in plan.pretrains:
            if jobs.pretrain_finished(pj):
                counts["reused"] += 1
                ready.add(pj.name)
                continue
            log(f"ablation: pretrain {pj.name} ({pj.params.pretrain.steps} steps)")
            tracking = _tracking(parent, _pretrain_tags(pj))
            args = (pj.params.model_dump(mode="json"), str(pj.out), manifest, tracking)
            pending[pool.submit(jobs.run_pretrain_job, *args)] = ("pt", pj, time.perf_counter())
        submit_finetunes(None)
        for pj in plan.pretrains:
            if pj.name in ready:
                submit_finetunes(pj.name)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                kind, job, started = pending.pop(fut)
                exc = fut.exception()
                secs = time.perf_counter() - started
                name = job.name if kind == "pt" else job.key
                if exc is not None:
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    log(f"ablation: {name} FAILED after {secs:.0f} s: {errors[name]}")
                else:
                    counts["ran"] += 1
                    took = fut.result().get("job_s")
                    own = f", {took:.0f} s running" if isinstance(took, int | float) else ""
                    log(f"ablation: {name} done ({secs:.0f} s since queued{own})")
                if kind == "pt":
                    if exc is None:
                        ready.add(job.name)
                    submit_finetunes(job.name)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- MLflow ---------------------------------------------------------------------------------------


def _start_tracking(plan: Plan, log: Callable[[str], None]) -> tuple[Any, str | None]:
    from babelrs_core.pipeline.runner import lineage_tags
    from babelrs_core.tracking import Tracker

    tracker = Tracker.from_params(plan.params)
    if not tracker.enabled:
        return None, None
    tags = {**lineage_tags(plan.params, "ablation"), "babelrs.kind": "ablation",
            "babelrs.device": plan.device}  # fmt: skip
    parent = tracker.start(PARENT_NAME, tags)
    flat = flatten(plan.params)
    tracker.log_params(parent, {k: v for k, v in flat.items() if k.startswith("ablation.")})
    tracker.log_params(parent, {"plan.runs": len(plan.finetunes),
                                "plan.pretraining_runs": len(plan.pretrains)})  # fmt: skip
    log(f"ablation: MLflow parent run {parent} ({tracker.uri})")
    return tracker, parent


def _tracking(parent: str | None, tags: dict[str, str]) -> jobs.Tracking | None:
    """How a job's stage runs are tracked: children of ``parent`` with ``tags``."""
    return None if parent is None else {"parent": parent, "tags": tags}


def _pretrain_tags(job: PretrainJob) -> dict[str, str]:
    return {"babelrs.ablation.kind": "pretrain", "babelrs.variant": ",".join(job.variants),
            "babelrs.seed": str(job.params.seed)}  # fmt: skip


def _finetune_tags(job: FinetuneJob) -> dict[str, str]:
    tags = {
        "babelrs.ablation.kind": "finetune", "babelrs.variant": job.variant,
        "babelrs.precision": job.precision, "babelrs.seed": str(job.seed),
        "babelrs.mode": job.mode, "babelrs.init": job.params.finetune.init,
    }  # fmt: skip
    return tags | ({"babelrs.pretrain": job.pretrain} if job.pretrain else {})


def _metrics(nums: dict[str, float]) -> list[Any]:
    import math

    from mlflow.entities import Metric

    from babelrs_core.tracking import metric_key

    now = int(time.time() * 1000)
    return [Metric(metric_key(k), float(v), now, 0) for k, v in nums.items() if math.isfinite(v)]


def _log_parent(tracker: Any, parent: str, plan: Plan, summary: dict[str, Any]) -> None:
    nums: dict[str, float] = {}
    for g in summary["groups"]:
        for key, v in g["mean"].items():
            nums[f"{g['variant']}.{g['precision']}.{key}.mean"] = v
            nums[f"{g['variant']}.{g['precision']}.{key}.spread"] = g["spread"][key]
    for o in summary["orderings"]:
        nums[f"ordering.{o['precision']}.held"] = float(o["held"])
        nums[f"ordering.{o['precision']}.concordant_pairs"] = float(o["concordant"])
    if nums:
        tracker.client.log_batch(parent, metrics=_metrics(nums))
    tracker.log_artifacts(
        parent, [plan.root / "summary.json", Path(plan.params.ablation.plots_dir)]
    )
