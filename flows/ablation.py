"""``babelrs-ablation``: the encoder-start ablation (docs/ablation.md) as a Prefect 3 flow.

A thin scheduler: the data, the plan, the reuse checks, the MLflow parent run and the report are
:class:`babelrs_core.ablation.run.AblationRun`'s, and each job runs its stages through
:func:`babelrs_core.pipeline.runner.execute_stage` (:mod:`babelrs_core.ablation.jobs`). What
Prefect adds:

* every pretraining and fine-tuning run of the plan that is not reused is a task run,
  ``pretrain/<name>`` or ``finetune/<variant>/<precision>/seed<k>`` (which also evaluates full
  runs), with the options of the retraining flow's training stages (:mod:`flows.common`): the tag
  ``gpu`` (the tag concurrency limit ``gpu`` counts them with the retraining's), retries for
  transient errors only, the stages' timeouts; and their library logs in the task log;
* ``ablation.workers`` task runs at once, each in a worker process
  (``ProcessPoolTaskRunner(max_workers=ablation.workers)``, also for ``workers: 1``: the stage
  timeouts need the task in a process of its own, not a thread of the flow's);
* a job is submitted when a worker is free, the first ready one in
  :meth:`~babelrs_core.ablation.run.AblationRun.priority`'s order (pretrainings, then the runs a
  compute control waits for, then the longest runs, the short fp16 probes last); a variant's
  fine-tunings are ready once its pretraining task completed and carry ``wait_for`` on that task
  (the dependency the UI draws); a failed pretraining's fine-tunings do not run;
* a compute control (``imagenet_long``) is submitted once the pretraining and the runs it is
  measured against have finished, with the iterations decided from their records;
* a failed run is recorded and the others go on; after the report is written the flow fails
  (:class:`~babelrs_core.ablation.run.AblationError`) naming the failed runs;
* flow parameters that override params.yaml keys (``ablation-iters100-seed0``), so the
  deployment ``ablation`` of prefect.yaml can run any plan.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from babelrs_core.ablation import jobs
from babelrs_core.ablation.plan import FinetuneJob, PretrainJob
from babelrs_core.ablation.run import AblationRun
from babelrs_core.config import Params, load_params
from babelrs_core.pipeline.specs import stage
from flows.common import flow_run_namer, library_logs_to_task_log, stage_task_options

# Reuse is by fingerprint (babelrs_core.ablation.jobs), not by Prefect's cache; results come back
# to the flow from the worker process and are not persisted.
_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="ablation-pretrain", **_TASK)
def pretrain_task(
    params_json: dict[str, Any], out: str, manifest: str, tracking: jobs.Tracking | None
) -> dict[str, Any]:
    """One pretraining run of the plan (:func:`jobs.run_pretrain_job`)."""
    with library_logs_to_task_log():
        return jobs.run_pretrain_job(params_json, out, manifest, tracking)


@task(name="ablation-finetune", **_TASK)
def finetune_task(
    params_json: dict[str, Any],
    out: str,
    manifest: str,
    encoder: str | None,
    mode: str,
    tracking: jobs.Tracking | None,
) -> dict[str, Any]:
    """One fine-tuning run of the plan, evaluated unless a probe (:func:`jobs.run_finetune_job`)."""
    with library_logs_to_task_log():
        return jobs.run_finetune_job(params_json, out, manifest, encoder, mode, tracking)


def task_runner(workers: int) -> TaskRunner:
    """``workers`` task runs at once, each in a worker process. Also for ``workers: 1``: Prefect
    cannot enforce a task's timeout in a worker thread of the flow's process."""
    return ProcessPoolTaskRunner(max_workers=workers)


class _NoTagWarning(logging.Filter):
    """Drop the task runner's warning "Task ... has N tags but only M workers available. This may
    lead to dead-locks" that every submission with ``wait_for`` gets when the task has as many
    tags as the runner has workers: here a fine-tuning is submitted only once the pretraining it
    waits for has finished, so waiting never holds a worker."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "tags but only" not in record.getMessage()


@contextmanager
def _quiet_tag_warning(runner: TaskRunner) -> Iterator[None]:
    quiet = _NoTagWarning()
    runner.logger.addFilter(quiet)
    try:
        yield
    finally:
        runner.logger.removeFilter(quiet)


@contextmanager
def _workers_use_this_api() -> Iterator[None]:
    """Task runs in worker processes report to the API of this flow run. Without
    ``PREFECT_API_URL`` (``make ablation`` on its own: an ephemeral API), every worker process
    would start a temporary server of its own; they get the URL of this process's one instead."""
    if PREFECT_API_URL.value():
        yield
        return
    api = str(get_client(sync_client=True).api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield


def schedule(run: AblationRun, runner: TaskRunner) -> None:
    """Run every job of ``run``'s plan that is not reused through ``runner``, as
    :class:`AblationRun` orders, and report each outcome to it; returns when all are done."""
    params = run.plan.params
    pretrain = pretrain_task.with_options(**stage_task_options([stage("pretrain")], params))
    finetune = finetune_task.with_options(
        **stage_task_options([stage("finetune"), stage("evaluate")], params)
    )
    pending: dict[PrefectFuture[Any], tuple[PretrainJob | FinetuneJob, float]] = {}
    finished: queue.SimpleQueue[PrefectFuture[Any]] = queue.SimpleQueue()
    # Jobs wait here, not in the runner's queue, until a worker is free: then the next one is
    # the first in AblationRun.priority's order among those ready, whenever it became ready.
    # Each keeps the time it became ready: "s since queued" in the run's log counts the wait.
    ready: list[tuple[PretrainJob | FinetuneJob, PrefectFuture[Any] | None, float]] = []

    def make_ready(
        jobs: Sequence[PretrainJob | FinetuneJob], after: PrefectFuture[Any] | None = None
    ) -> None:
        ready.extend((job, after, time.perf_counter()) for job in jobs)

    def fill() -> None:
        while ready and len(pending) < run.plan.params.ablation.workers:
            item = min(ready, key=lambda item: run.priority(item[0]))
            ready.remove(item)
            job, after, queued = item
            if isinstance(job, PretrainJob):
                fut = runner.submit(
                    pretrain.with_options(task_run_name=f"pretrain/{job.name}"),
                    run.pretrain_args(job),
                )
            else:
                fut = runner.submit(
                    finetune.with_options(task_run_name=f"finetune/{job.key}"),
                    run.finetune_args(job),
                    wait_for=[after] if after is not None else None,
                )
            pending[fut] = (job, queued)
            fut.add_done_callback(finished.put)

    make_ready(run.pretrains_to_run())
    make_ready(run.finetunes_to_run(None))
    for name in run.ready_pretrains():  # reused pretrainings: their fine-tunings are ready now
        make_ready(run.finetunes_to_run(name))
    make_ready(run.deferred_to_run())
    fill()
    while pending:
        fut = finished.get()
        job, queued = pending.pop(fut)
        try:
            result = fut.result()
        except Exception as exc:
            run.failed(job, exc, queued)
        else:
            run.done(job, result, queued)
        if isinstance(job, PretrainJob):
            make_ready(run.finetunes_to_run(job.name), after=fut)
        make_ready(run.deferred_to_run())  # compute controls, once the runs they measure have run
        fill()


@flow(name="babelrs-ablation", log_prints=True, flow_run_name=flow_run_namer("ablation"))
def babelrs_ablation(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    track: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """The ablation of params.yaml's ``ablation`` (with ``overrides`` applied) on ``device``
    (default: ``finetune.device`` resolved); returns the report summary."""
    logger = get_run_logger()
    params: Params = load_params(Path(params_path), overrides)  # invalid params fail first
    with AblationRun(params, track=track, device=device, log=logger.info) as run:
        runner = task_runner(params.ablation.workers)
        with _workers_use_this_api(), runner, _quiet_tag_warning(runner):
            schedule(run, runner)
        return run.finish()


def run_ablation(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    track: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """The ``prefect`` ablation runner (entry point ``babelrs.ablation_runners``): the flow, run
    now."""
    return babelrs_ablation(params_path, overrides, track, device)


if __name__ == "__main__":
    babelrs_ablation()
