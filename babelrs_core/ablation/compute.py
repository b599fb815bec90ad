"""Equal total compute: how many iterations a compute control (``ablation.compute_controls``,
e.g. ``imagenet_long``) fine-tunes for.

A start without pretraining gets, on top of the ablation's ``iters``, the iterations that the
pretraining of a csia variant cost::

    extra = round(pretraining seconds / seconds per fine-tuning iteration of the start)

both measured on this machine from the runs' own records, not estimated:

* pretraining seconds: ``metrics.json`` ``timing.train_cpu_s`` (the training loop's process CPU
  time, all threads) per step this run x ``steps`` (a resumed run is scaled to the whole run);
  the held-out evaluation and data preparation are not counted (they do not train the encoder);
* seconds per iteration: the mean ``cpu_s_per_iter`` of the start's own fine-tuning runs at the
  same precision (``metrics.jsonl``, the first logged window left out: it holds the start-up),
  averaged over its seeds.

On a CUDA device both are wall-clock seconds (``timing.train_s`` and ``s_per_iter``) instead:
there the process CPU time does not measure the work. Rounding is half up. The decision and its
inputs are written to the job's ``compute.json`` and ``ablation_run.json``.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from babelrs_core.ablation.plan import FinetuneJob, Plan

COMPUTE_JSON = "compute.json"


def extra_iters(pretrain_s: float, s_per_iter: float) -> int:
    """The fine-tuning iterations that ``pretrain_s`` seconds buy at ``s_per_iter`` (half up)."""
    if s_per_iter <= 0 or pretrain_s < 0:
        raise ValueError(f"need pretrain_s >= 0 and s_per_iter > 0 ({pretrain_s}, {s_per_iter})")
    return math.floor(pretrain_s / s_per_iter + 0.5)


def clock_of(device: str) -> str:
    """``cpu`` (process CPU seconds) on a CPU device, else ``wall``."""
    return "cpu" if device == "cpu" else "wall"


def pretrain_seconds(out: Path, clock: str) -> float | None:
    """Training seconds of the pretraining in ``out`` over all its steps (None: not recorded)."""
    path = out / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    timing = m.get("timing") or {}
    secs = timing.get("train_cpu_s" if clock == "cpu" else "train_s")
    ran, steps = timing.get("steps_this_run"), m.get("steps")
    if secs is None or not ran or not steps:
        return None
    return float(secs) / int(ran) * int(steps)


def seconds_per_iter(finetune_dir: Path, clock: str) -> float | None:
    """Mean seconds per iteration of a finished fine-tuning run (the first logged window left
    out; None while it has not finished)."""
    path = finetune_dir / "metrics.jsonl"
    if not path.exists() or not (finetune_dir / "train.json").exists():  # not finished
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    key = "cpu_s_per_iter" if clock == "cpu" else "s_per_iter"
    vals = [h[key] for h in (lines[1:] or lines) if h.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def measure(plan: Plan, job: FinetuneJob) -> dict[str, Any] | None:
    """The decision for compute control ``job`` from its inputs' files (None: not all there)."""
    if job.compute is None:
        return None
    c, clock = job.compute, clock_of(plan.device)
    pre = pretrain_seconds(plan.pretrain_job(c.pretrain).out, clock)
    runs = {j.key: j for j in plan.finetunes}
    per = [seconds_per_iter(runs[k].finetune_dir, clock) for k in c.measured if k in runs]
    if pre is None or not per or any(p is None for p in per) or len(per) != len(c.measured):
        return None
    s_iter = statistics.fmean(p for p in per if p is not None)
    extra = extra_iters(pre, s_iter)
    return {
        "clock": clock,
        "pretrain": c.pretrain,
        "pretrain_s": round(pre, 3),
        "measured_runs": list(c.measured),
        "s_per_iter": round(s_iter, 5),
        "base_iters": c.base_iters,
        "extra_iters": extra,
        "iters": c.base_iters + extra,
    }


def decided(job: FinetuneJob, measured: dict[str, Any]) -> FinetuneJob:
    """``job`` with its iterations set by ``measured``."""
    params = job.params.model_copy(deep=True)
    params.finetune.iters = int(measured["iters"])
    return replace(job, params=params, measured=measured)


def resolve(plan: Plan, job: FinetuneJob) -> FinetuneJob | None:
    """Decide ``job``'s iterations and put it in the plan (None: its inputs have not run)."""
    m = measure(plan, job)
    if m is None:
        return None
    new = decided(job, m)
    plan.replace(new)
    return new


def resolve_all(plan: Plan) -> None:
    """Decide every compute control whose inputs are on disk already."""
    for job in list(plan.finetunes):
        if job.pending:
            resolve(plan, job)


def record(job: FinetuneJob) -> None:
    """Write the decision beside the run (``compute.json``)."""
    from babelrs_core.io.atomic import write_json

    if job.measured is not None:
        job.out.mkdir(parents=True, exist_ok=True)
        write_json(job.out / COMPUTE_JSON, {"run": job.key, **job.measured})
