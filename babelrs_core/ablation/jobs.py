"""The work of one ablation run, in a form a worker process can call (plain arguments in, a
JSON-able dict out), and the checks that let a finished run be reused.

A pretraining job writes ``job.json`` (its params fingerprint) before training and marks it done
after; a fine-tuning job is finished when ``run.json`` matches its params and its outputs exist.
Interrupted runs resume from their newest checkpoint; runs whose params or length changed start
over (:func:`starts_over`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from babelrs_core.ablation.plan import FinetuneJob, PretrainJob
from babelrs_core.config import Params
from babelrs_core.fingerprint import Fingerprint, fingerprint_changes
from babelrs_core.io.atomic import write_json

JOB_JSON = "job.json"
#: how a job's stage runs are tracked: ``{"parent": run id, "tags": {...}}`` (None: untracked)
Tracking = dict[str, Any]


def pretrain_finished(job: PretrainJob) -> bool:
    """Done with these very params (``job.json``) and the encoder is there."""
    meta = job.out / JOB_JSON
    if not meta.exists() or not (job.out / "encoder.json").exists():
        return False
    saved = json.loads(meta.read_text())
    return bool(saved.get("done")) and saved.get("fingerprint") == job.fingerprint()


def finetune_finished(job: FinetuneJob, manifest: Path, encoder: Path | None) -> bool:
    """The fine-tuning ran with these params for all its iterations (and was evaluated)."""
    from babelrs_core.detector.train import fingerprint

    ft = job.finetune_dir
    need = [ft / "run.json", ft / "train.json", ft / "metrics.jsonl"]
    if job.mode == "full":
        need += [ft / "detector.json", job.eval_dir / "metrics" / "eval.json"]
    if not all(p.exists() for p in need):
        return False
    current = fingerprint(job.params, manifest, encoder)
    return not starts_over(ft, current, job.params.finetune.iters)


def starts_over(finetune_dir: Path, current: Fingerprint, iters: int) -> bool:
    """True when the fine-tuning folder holds another run than the one planned: other params
    (``run.json``), or a run finished at another number of iterations (``train.json``). The
    detector stage would extend the latter, but its learning-rate schedule (warmup, decay) was
    laid over its own length, so an extended run is not the run the plan names (``imagenet_long``
    gets ``iters`` from measured seconds, which change with the pretraining recipe): it starts
    over. A run stopped before finishing resumes."""
    run_json, train_json = finetune_dir / "run.json", finetune_dir / "train.json"
    if run_json.exists() and fingerprint_changes(json.loads(run_json.read_text()), current):
        return True
    return train_json.exists() and json.loads(train_json.read_text()).get("iters") != iters


def _job_params(params_json: dict[str, Any], **paths: Path) -> Params:
    """The job's params with its own folders in ``paths`` (what its stages read and write)."""
    params = Params.model_validate(params_json)
    return params.model_copy(update={"paths": params.paths.model_copy(update=paths)})


def _run(name: str, params: Params, tracking: Tracking | None, run_name: str) -> dict[str, Any]:
    """Stage ``name`` through the one stage runner (a child of the ablation's parent run)."""
    from babelrs_core.pipeline import stage
    from babelrs_core.pipeline.runner import execute_stage
    from babelrs_core.tracking import Tracker

    if tracking is None:
        return execute_stage(stage(name), params, runner="ablation", progress=False)
    return execute_stage(
        stage(name),
        params,
        tracker=Tracker.from_params(params),
        runner="ablation",
        parent_run_id=tracking["parent"],
        progress=False,
        run_name=f"{name}/{run_name}",
        tags=tracking["tags"],
    )


def run_pretrain_job(
    params_json: dict[str, Any], out: str, manifest: str, tracking: Tracking | None = None
) -> dict[str, Any]:
    """Pretrain into ``out`` (resuming when ``job.json`` holds the same params, else starting
    over) through the pretrain stage; ``tracking``: the parent run and tags of its MLflow run."""
    from babelrs_core.pretrain.train import fingerprint

    t0 = time.perf_counter()
    target = Path(out)
    params = _job_params(params_json, manifest=Path(manifest), pretrain_out=target)
    fp = json.loads(json.dumps(fingerprint(params)))
    meta = target / JOB_JSON
    same = meta.exists() and json.loads(meta.read_text()).get("fingerprint") == fp
    if not same and target.exists():
        shutil.rmtree(target)  # another run's (or an unfinished) folder: start over
    target.mkdir(parents=True, exist_ok=True)
    write_json(meta, {"fingerprint": fp, "done": False})
    summary = _run("pretrain", params, tracking, target.name)
    write_json(meta, {"fingerprint": fp, "done": True})
    took = time.perf_counter() - t0
    return {"timing": summary.get("timing", {}), "out": str(target), "job_s": took}


def run_finetune_job(
    params_json: dict[str, Any],
    out: str,
    manifest: str,
    encoder: str | None,
    mode: str,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Fine-tune into ``out/finetune`` and (``mode == "full"``) evaluate into ``out/eval``
    through the finetune and evaluate stages; a folder fine-tuned with other params starts over."""
    from babelrs_core.detector.train import fingerprint

    t0 = time.perf_counter()
    ft, ev = Path(out) / "finetune", Path(out) / "eval"
    enc = Path(encoder) if encoder else None
    folders = {"manifest": Path(manifest), "finetune_out": ft, "eval_out": ev}
    params = _job_params(params_json, **folders, **({"pretrain_out": enc} if enc else {}))
    if starts_over(ft, fingerprint(params, Path(manifest), enc), params.finetune.iters):
        shutil.rmtree(ft)
    key = str(Path(out).relative_to(Path(out).parents[2]))  # <variant>/<precision>/seed<k>
    summary = _run("finetune", params, tracking, key)
    result: dict[str, Any] = {"timing": summary.get("timing", {}), "out": out}
    if mode == "full":
        scores = _run("evaluate", params, tracking, key)
        result["eval"] = {k: v for k, v in scores.items() if k not in ("info", "mlflow_run_id")}
    result["job_s"] = time.perf_counter() - t0
    return result
