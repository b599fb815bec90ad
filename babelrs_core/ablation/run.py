"""``babelrs ablation run``: what the ablation needs besides a scheduler.

Its jobs are scheduled by an orchestrator plugin, an entry point of the group
``babelrs.ablation_runners`` (:func:`get_runner`; this package registers ``prefect``: the
``babelrs-ablation`` flow of ``flows/ablation.py``), so the core never imports an orchestrator.
:class:`AblationRun` is the rest, whatever schedules: SOI-mini when the manifest is missing, the
plan, the MLflow parent run ``babelrs-ablation``, which runs still have to run (finished ones are
reused by fingerprint, :mod:`babelrs_core.ablation.jobs`), the arguments and MLflow tags of each
job, what each did, and at the end ``RUN_JSON`` and the report. Each job's stage runs are child
MLflow runs of the parent (tags ``babelrs.variant``, ``babelrs.precision``, ``babelrs.seed``)
logged by the process that runs the job. A failed run is recorded and the others go on; the
command fails at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast

from babelrs_core.ablation import jobs
from babelrs_core.ablation.label_efficiency import label_efficiency_rows
from babelrs_core.ablation.plan import FinetuneJob, Plan, PretrainJob, build_plan
from babelrs_core.ablation.report import RUN_JSON, SUMMARY_JSON, write_report
from babelrs_core.config import Params, flatten
from babelrs_core.errors import BabelrsError
from babelrs_core.io.atomic import write_json
from babelrs_core.logs import get_logger

PARENT_NAME = "babelrs-ablation"
#: entry-point group of the ablation's schedulers (pyproject.toml)
GROUP = "babelrs.ablation_runners"


_log = get_logger(__name__)


class AblationError(BabelrsError, RuntimeError):
    """Some runs of the ablation failed (the report lists them)."""


class AblationRunner(Protocol):
    """What an ablation runner is called with; it returns the report summary and raises
    :class:`AblationError` when runs failed (after writing the report)."""

    def __call__(
        self,
        params_path: str = "params.yaml",
        overrides: dict[str, Any] | None = None,
        track: bool = True,
        device: str | None = None,
    ) -> dict[str, Any]: ...


def runner_names() -> list[str]:
    """The installed ablation runners."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def get_runner(name: str = "prefect") -> AblationRunner:
    """The ablation runner called ``name``; a clear error lists the installed ones."""
    from babelrs_core.pipeline.runners import plugin

    return cast(AblationRunner, plugin(GROUP, name, "ablation runner"))


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


class AblationRun:
    """One invocation of the ablation, for the scheduler that runs its jobs.

    Construction makes the data if missing, builds the plan and starts the MLflow parent run
    (``track``). The scheduler asks :meth:`pretrains_to_run` and :meth:`finetunes_to_run` what to
    run (the pretrainings and the fine-tunings that need none first; a variant's fine-tunings once
    its pretraining is done), calls :func:`jobs.run_pretrain_job` / :func:`jobs.run_finetune_job`
    with :meth:`pretrain_args` / :meth:`finetune_args` and reports each outcome to :meth:`done` or
    :meth:`failed`; :meth:`finish` then writes ``RUN_JSON`` and the report, closes the parent run
    and raises :class:`AblationError` if a run failed. Use it as a context manager: leaving the
    block before :meth:`finish` closes the parent run ``FAILED``. Progress lines go to ``log``.
    """

    def __init__(
        self,
        params: Params,
        *,
        track: bool = True,
        device: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.log = log or _log.info
        self.plan = build_plan(params, device)
        ensure_data(self.plan.params, self.log)
        self.errors: dict[str, str] = {}
        self.counts = {"ran": 0, "reused": 0}
        self._ready: set[str] = set()  # pretrainings finished (this time or before)
        self._settled: set[str] = set()  # fine-tunings finished (this time or before)
        self._handled: set[str] = set()  # compute controls submitted, reused or failed
        self.tracker: Any = None  # babelrs_core.tracking.Tracker (imports mlflow)
        self.parent: str | None = None  # the MLflow parent run id
        if track:
            self.tracker, self.parent = _start_tracking(self.plan, self.log)
        self._open = self.parent is not None

    def __enter__(self) -> AblationRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(ok=False)  # a no-op once finish() closed it

    # -- what to run ---------------------------------------------------------------------------

    def pretrains_to_run(self) -> list[PretrainJob]:
        """The pretraining runs to run (finished ones are counted as reused)."""
        out = []
        for job in self.plan.pretrains:
            if jobs.pretrain_finished(job):
                self.counts["reused"] += 1
                self._ready.add(job.name)
                continue
            self.log(f"ablation: pretrain {job.name} ({job.params.pretrain.steps} steps)")
            out.append(job)
        return out

    def ready_pretrains(self) -> list[str]:
        """The pretraining runs finished so far, in plan order."""
        return [j.name for j in self.plan.pretrains if j.name in self._ready]

    def finetunes_to_run(self, pretrain: str | None) -> list[FinetuneJob]:
        """The fine-tunings of ``pretrain``'s variants (None: those that need no pretraining) to
        run now; finished ones are counted as reused, and if that pretraining failed all of them
        are recorded as failed."""
        out = []
        for job in self.plan.all_finetunes():
            if job.pretrain != pretrain or job.compute is not None:
                continue
            if pretrain is not None and pretrain not in self._ready:
                self.errors[job.key] = f"its pretraining {pretrain} failed"
                continue
            if jobs.finetune_finished(job, self.plan.manifest, self.encoder(job)):
                self.counts["reused"] += 1
                self._settled.add(job.key)
                continue
            self.log(
                f"ablation: fine-tune {job.key} ({job.mode}, {job.params.finetune.iters} iters)"
            )
            out.append(job)
        return out

    def deferred_to_run(self) -> list[FinetuneJob]:
        """The compute controls whose inputs (a pretraining, the start's own runs) have all
        finished: their iterations are decided now from those runs' records
        (:mod:`~babelrs_core.ablation.compute`, written to ``compute.json``), and they are
        returned to run (or counted as reused). One whose input failed is recorded as failed.
        Call it again after every outcome."""
        from babelrs_core.ablation import compute

        out = []
        for job in list(self.plan.finetunes):
            if job.compute is None or job.key in self._handled:
                continue
            needs = [job.compute.pretrain, *job.compute.measured]
            failed = [n for n in needs if n in self.errors]
            if failed:
                self._handled.add(job.key)
                self.errors[job.key] = f"its compute measurement failed: {', '.join(failed)}"
                continue
            if job.compute.pretrain not in self._ready or not all(
                k in self._settled for k in job.compute.measured
            ):
                continue
            self._handled.add(job.key)
            m = compute.measure(self.plan, job)
            if m is None:
                self.errors[job.key] = "its inputs ran but recorded no timing to measure"
                continue
            job = compute.decided(job, m)
            self.plan.replace(job)
            compute.record(job)
            if jobs.finetune_finished(job, self.plan.manifest, None):
                self.counts["reused"] += 1
                self._settled.add(job.key)
                continue
            self.log(
                f"ablation: fine-tune {job.key} ({job.params.finetune.iters} iters = "
                f"{m['base_iters']} + {m['extra_iters']} for {m['pretrain_s']:.0f} {m['clock']} s "
                f"of pretraining at {m['s_per_iter']:.3f} s/iter)"
            )
            out.append(job)
        return out

    def priority(self, job: PretrainJob | FinetuneJob) -> tuple[int, int, int]:
        """Sort key of the jobs ready to run, first to start first: the pretrainings (others wait
        on them), the runs a compute control is measured on, then the longest runs first and the
        short probes last, so that the workers finish together instead of one running a long job
        alone at the end (longest-processing-time order; a language-model pretraining costs about
        twice a classification one of as many steps)."""
        if isinstance(job, PretrainJob):
            pre = job.params.pretrain
            return (0, 0 if pre.objective == "language" else 1, -pre.steps)
        iters = job.params.finetune.iters
        if job.mode == "probe":
            return (3, 0, -iters)
        waited_on = [j.compute.measured for j in self.plan.finetunes if j.pending and j.compute]
        inputs = {key for keys in waited_on for key in keys}
        return (1 if job.key in inputs else 2, 0, -iters)

    def encoder(self, job: FinetuneJob) -> Path | None:
        """The pretraining output ``job`` fine-tunes from (None: imagenet / scratch)."""
        return self.plan.pretrain_job(job.pretrain).out if job.pretrain else None

    def pretrain_args(self, job: PretrainJob) -> dict[str, Any]:
        """The keyword arguments of :func:`jobs.run_pretrain_job` for ``job`` (JSON-able)."""
        return {
            "params_json": job.params.model_dump(mode="json"),
            "out": str(job.out),
            "manifest": str(self.plan.manifest),
            "tracking": _tracking(self.parent, _pretrain_tags(job)),
        }

    def finetune_args(self, job: FinetuneJob) -> dict[str, Any]:
        """The keyword arguments of :func:`jobs.run_finetune_job` for ``job`` (JSON-able)."""
        enc = self.encoder(job)
        return {
            "params_json": job.params.model_dump(mode="json"),
            "out": str(job.out),
            "manifest": str(self.plan.manifest),
            "encoder": str(enc) if enc else None,
            "mode": job.mode,
            "tracking": _tracking(self.parent, _finetune_tags(job)),
        }

    # -- outcomes ------------------------------------------------------------------------------

    def done(self, job: PretrainJob | FinetuneJob, result: dict[str, Any], queued: float) -> None:
        """``job`` ran (``queued``: ``time.perf_counter()`` when it was handed to the scheduler)."""
        self.counts["ran"] += 1
        if isinstance(job, PretrainJob):
            self._ready.add(job.name)
        else:
            self._settled.add(job.key)
        took = result.get("job_s")
        own = f", {took:.0f} s running" if isinstance(took, int | float) else ""
        self.log(
            f"ablation: {_name(job)} done ({time.perf_counter() - queued:.0f} s since queued{own})"
        )

    def failed(self, job: PretrainJob | FinetuneJob, exc: BaseException, queued: float) -> None:
        """``job`` raised ``exc``: recorded, the others go on."""
        name = _name(job)
        self.errors[name] = f"{type(exc).__name__}: {exc}"
        secs = time.perf_counter() - queued
        self.log(f"ablation: {name} FAILED after {secs:.0f} s: {self.errors[name]}")

    def finish(self) -> dict[str, Any]:
        """Write ``RUN_JSON`` and the report, log the summary on the parent run and close it;
        returns the report summary, or raises :class:`AblationError` naming the failed runs."""
        params = self.plan.params
        info = {
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "device": self.plan.device,
            "workers": params.ablation.workers,
            "threads": params.ablation.threads,
            "cpus": os.cpu_count(),
            "mlflow_parent_run_id": self.parent,
            **self.counts,
            "compute_controls": {j.key: j.measured for j in self.plan.finetunes if j.compute},
            "label_efficiency": label_efficiency_rows(self.plan),
        }
        write_json(params.ablation.report_dir / RUN_JSON, info)
        summary = write_report(self.plan, self.errors, info)
        if self.tracker is not None and self.parent is not None:
            _log_parent(self.tracker, self.parent, self.plan, summary)
        self._close(ok=not self.errors)
        if self.errors:
            raise AblationError(
                f"{len(self.errors)} ablation run(s) failed: "
                + "; ".join(f"{k}: {v}" for k, v in self.errors.items())
            )
        return summary

    def _close(self, ok: bool) -> None:
        if self._open and self.tracker is not None and self.parent is not None:
            self._open = False
            self.tracker.finish(self.parent, ok)


def report_ablation(params: Params, device: str | None = None) -> dict[str, Any]:
    """Regenerate the report from the outputs of earlier runs (nothing is trained)."""
    return write_report(build_plan(params, device))


def _name(job: PretrainJob | FinetuneJob) -> str:
    return job.name if isinstance(job, PretrainJob) else job.key


# -- MLflow ---------------------------------------------------------------------------------------


def _start_tracking(plan: Plan, log: Callable[[str], None]) -> tuple[Any, str | None]:
    from babelrs_core.pipeline.runner import lineage_tags
    from babelrs_core.tracking import Tracker

    tracker = Tracker.from_params(plan.params)
    if not tracker.enabled:
        return None, None
    tags = {
        **lineage_tags(plan.params, "ablation"),
        "babelrs.kind": "ablation",
        "babelrs.device": plan.device,
    }
    parent = tracker.start(PARENT_NAME, tags)
    flat = flatten(plan.params)
    tracker.log_params(parent, {k: v for k, v in flat.items() if k.startswith("ablation.")})
    tracker.log_params(
        parent, {"plan.runs": len(plan.finetunes), "plan.pretraining_runs": len(plan.pretrains)}
    )
    log(f"ablation: MLflow parent run {parent} ({tracker.uri})")
    return tracker, parent


def _tracking(parent: str | None, tags: dict[str, str]) -> jobs.Tracking | None:
    """How a job's stage runs are tracked: children of ``parent`` with ``tags``."""
    return None if parent is None else {"parent": parent, "tags": tags}


def _pretrain_tags(job: PretrainJob) -> dict[str, str]:
    return {
        "babelrs.ablation.kind": "pretrain",
        "babelrs.variant": ",".join(job.variants),
        "babelrs.seed": str(job.params.seed),
    }


def _finetune_tags(job: FinetuneJob) -> dict[str, str]:
    tags = {
        "babelrs.ablation.kind": "finetune",
        "babelrs.variant": job.variant,
        "babelrs.precision": job.precision,
        "babelrs.seed": str(job.seed),
        "babelrs.mode": job.mode,
        "babelrs.init": job.params.finetune.init,
    }
    if job.label_fraction < 1:
        tags["babelrs.label_fraction"] = f"{job.label_fraction:g}"
    if job.measured is not None:
        tags["babelrs.extra_iters"] = str(job.measured["extra_iters"])
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
        parent,
        [plan.params.ablation.report_dir / SUMMARY_JSON, Path(plan.params.ablation.plots_dir)],
    )
