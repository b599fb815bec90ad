"""The work of one ablation run, in a form a worker process can call (plain arguments in, a
JSON-able dict out), and the checks that let a finished run be reused.

A pretraining job writes ``job.json`` (its params fingerprint) before training and marks it done
after; a fine-tuning job is finished when ``run.json`` matches its params and its outputs exist.
Interrupted runs resume from their newest checkpoint; runs whose params changed start over.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from babelrs_core.ablation.plan import FinetuneJob, PretrainJob
from babelrs_core.io.atomic import write_json

JOB_JSON = "job.json"


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
    now = json.loads(json.dumps(fingerprint(job.params, manifest, encoder)))
    if json.loads((ft / "run.json").read_text()) != now:
        return False
    return json.loads((ft / "train.json").read_text()).get("iters") == job.params.finetune.iters


def _same_params(run_json: Path, current: dict[str, Any]) -> bool:
    if not run_json.exists():
        return True  # nothing to compare: a fresh folder, or a run stopped before writing it
    return json.loads(run_json.read_text()) == json.loads(json.dumps(current))


def run_pretrain_job(params_json: dict[str, Any], out: str, manifest: str) -> dict[str, Any]:
    """Pretrain into ``out`` (resuming when ``job.json`` holds the same params)."""
    from babelrs_core.config import Params
    from babelrs_core.pretrain.train import fingerprint, run_pretraining

    t0 = time.perf_counter()
    params = Params.model_validate(params_json)
    target = Path(out)
    fp = json.loads(json.dumps(fingerprint(params)))
    meta = target / JOB_JSON
    same = meta.exists() and json.loads(meta.read_text()).get("fingerprint") == fp
    target.mkdir(parents=True, exist_ok=True)
    write_json(meta, {"fingerprint": fp, "done": False})
    summary = run_pretraining(params, manifest, target, resume=same)
    write_json(meta, {"fingerprint": fp, "done": True})
    took = time.perf_counter() - t0
    return {"timing": summary.get("timing", {}), "out": str(target), "job_s": took}


def run_finetune_job(
    params_json: dict[str, Any], out: str, manifest: str, encoder: str | None, mode: str
) -> dict[str, Any]:
    """Fine-tune into ``out/finetune`` and (``mode == "full"``) evaluate into ``out/eval``."""
    from babelrs_core.config import Params
    from babelrs_core.detector.train import fingerprint, run_finetune
    from babelrs_core.evaluation.report import run_evaluation

    t0 = time.perf_counter()
    params = Params.model_validate(params_json)
    ft, ev = Path(out) / "finetune", Path(out) / "eval"
    enc = Path(encoder) if encoder else None
    resume = _same_params(ft / "run.json", fingerprint(params, Path(manifest), enc))
    summary = run_finetune(params, manifest, enc, ft, resume=resume)
    result: dict[str, Any] = {"timing": summary.get("timing", {}), "out": out}
    if mode == "full":
        result["eval"] = {
            k: v for k, v in run_evaluation(params, manifest, ft, ev).items() if k != "info"
        }
    result["job_s"] = time.perf_counter() - t0
    return result
