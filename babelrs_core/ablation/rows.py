"""What the ablation report reads back from the run folders: one row per fine-tuning run
(:func:`collect_row`, from ``metrics.jsonl``, ``train.json``, ``run.json``, ``metrics/eval.json``),
the pretraining runs' rows (:func:`pretrain_info`), and the groups of rows over seeds
(:func:`aggregate`: mean +- spread per metric).

Spread over seeds: ``half_range`` = (max - min) / 2 (with two seeds: half their distance), or
``std`` = sample standard deviation (ddof 1).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from babelrs_core.ablation.plan import FinetuneJob, Plan
from babelrs_core.concepts import DATASETS

METRIC_KEYS = [f"{d}.{m}" for d in DATASETS for m in ("ap50", "map")] + [
    "overall.ap50",
    "overall.map",
    "overall.hmap",
]


class RunRow(TypedDict):
    """One fine-tuning run as the report reads it back (:func:`collect_row`)."""

    variant: str
    label: str
    precision: str
    seed: int
    mode: str  # full | probe
    init: str
    iters: int
    status: str  # ok | failed | missing
    error: str | None
    eval: dict[str, Any] | None  # metrics/eval.json
    nonfinite_steps: int | None
    first_nonfinite: int | None
    s_per_iter: float | None
    cpu_s_per_iter: float | None
    loss_scale_final: float | None
    final_loss: float | None
    grad_norm: list[list[Any]]  # [iter, pre-clip gradient norm or None]
    gradcos: dict[str, list[list[float]]]  # modality pair -> [iter, cosine]
    train_s: float | None


class Group(TypedDict):
    """The runs of one (variant, precision, mode) over seeds (:func:`aggregate`)."""

    variant: str
    label: str
    precision: str
    mode: str
    seeds: list[int]  # the seeds that ran ok
    runs: int
    failed: list[int]
    mean: dict[str, float]  # METRIC_KEYS -> mean over seeds
    spread: dict[str, float]  # ... and its spread
    nonfinite_steps: int | None
    first_nonfinite: int | None
    s_per_iter: float | None
    cpu_s_per_iter: float | None
    loss_scale_final: float | None


class PretrainRow(TypedDict):
    """One pretraining run of the plan as the report reads it back (:func:`pretrain_info`)."""

    name: str
    variants: list[str]
    steps: int
    mode: str  # LVSA mode
    tau: float
    image_size: int
    lm_frozen: str  # in words
    region_accuracy: float | None  # held-out region prompts, pooled over the modalities
    region_majority: float | None  # ... and their majority-answer baseline
    final_loss: float | None
    nonfinite_steps: int | None
    train_s: float | None
    train_cpu_s: float | None
    total_s: float | None


# -- rows: one per fine-tuning run, from its files ------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (empty when it does not exist)."""
    return json.loads(path.read_text()) if path.exists() else {}


def first_nonfinite(history: Sequence[dict[str, Any]]) -> int | None:
    """The first logged iteration whose cumulative ``nonfinite_steps`` is above 0 (exact when every
    iteration is logged, else the end of the window that held it)."""
    return next((int(h["iter"]) for h in history if (h.get("nonfinite_steps") or 0) > 0), None)


def cosine_curves(history: Sequence[dict[str, Any]], every: int) -> dict[str, list[list[float]]]:
    """Per modality pair, ``[iter, cosine]`` at the iterations where it was measured."""
    out: dict[str, list[list[float]]] = {}
    for h in history:
        it = int(h["iter"])
        if every <= 0 or not (it == 1 or it % every == 0):
            continue  # the hook repeats the latest cosine on every line; keep the measured ones
        for k, v in h.items():
            if k.startswith("gradcos.encoder.") and v is not None:
                out.setdefault(k.split(".", 2)[2], []).append([it, float(v)])
    return out


def collect_row(job: FinetuneJob, error: str | None = None) -> RunRow:
    """What the report needs of one run (``status`` ok | failed | missing)."""
    ft = job.finetune_dir
    history = read_jsonl(ft / "metrics.jsonl")
    train = read_json(ft / "train.json")
    run = read_json(ft / "run.json")
    ev = read_json(job.eval_dir / "metrics" / "eval.json") if job.mode == "full" else {}
    done = bool(train) and train.get("iters") == job.params.finetune.iters
    status = "failed" if error else ("ok" if done and (ev or job.mode == "probe") else "missing")
    every = int(run.get("finetune", {}).get("grad_cosine_every", 0) or 0)
    timed = history[1:] or history  # the first window pays the start-up
    cpu = [h["cpu_s_per_iter"] for h in timed if h.get("cpu_s_per_iter") is not None]
    wall = [h["s_per_iter"] for h in timed if h.get("s_per_iter") is not None]
    scales = [h["loss_scale"] for h in history if h.get("loss_scale") is not None]
    return {
        "variant": job.variant,
        "label": job.label,
        "precision": job.precision,
        "seed": job.seed,
        "mode": job.mode,
        "init": job.params.finetune.init,
        "iters": job.params.finetune.iters,
        "status": status,
        "error": error,
        "eval": ev or None,
        "nonfinite_steps": int(history[-1].get("nonfinite_steps") or 0) if history else None,
        "first_nonfinite": first_nonfinite(history),
        "s_per_iter": statistics.fmean(wall) if wall else None,
        "cpu_s_per_iter": statistics.fmean(cpu) if cpu else None,
        "loss_scale_final": scales[-1] if scales else None,
        "final_loss": next(
            (h["loss"] for h in reversed(history) if h.get("loss") is not None), None
        ),
        "grad_norm": [[int(h["iter"]), h.get("grad_norm")] for h in history],
        "gradcos": cosine_curves(history, every),
        "train_s": (train.get("timing") or {}).get("train_s"),
    }


def metric(ev: dict[str, Any] | None, key: str) -> float | None:
    """``eval.json`` value at ``dataset.metric`` (None when absent)."""
    node: Any = ev or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def pretrain_info(plan: Plan) -> list[PretrainRow]:
    """Rows of the pretraining table, from each run's ``metrics.jsonl`` / ``metrics.json``."""
    out: list[PretrainRow] = []
    for job in plan.pretrains:
        hist = read_jsonl(job.out / "metrics.jsonl")
        m = read_json(job.out / "metrics.json")
        timing = m.get("timing") or {}
        region = _region_scores(m.get("heldout") or {})
        cfg = job.params.pretrain
        out.append(
            {
                "name": job.name,
                "variants": list(job.variants),
                "steps": cfg.steps,
                "mode": cfg.lvsa.mode,
                "tau": cfg.lvsa.tau,
                "image_size": cfg.image_size,
                "lm_frozen": _lm_frozen(cfg.freeze),
                "region_accuracy": region["region_accuracy"],
                "region_majority": region["region_majority"],
                "final_loss": hist[-1]["loss"] if hist else None,
                "nonfinite_steps": hist[-1].get("nonfinite_steps") if hist else None,
                "train_s": timing.get("train_s"),
                "train_cpu_s": timing.get("train_cpu_s"),
                "total_s": timing.get("total_s"),
            }
        )
    return out


def _lm_frozen(freeze: Any) -> str:
    """What of the language model a pretraining kept frozen, in words."""
    parts = (["embeddings"] if freeze.lm_embeddings else []) + (
        [f"{freeze.lm_layers} layers"] if freeze.lm_layers else []
    )
    return " + ".join(parts) or "nothing"


def _region_scores(heldout: dict[str, Any]) -> dict[str, float | None]:
    """Held-out region accuracy and its majority-answer baseline, pooled over the modalities
    (weighted by their prompts; None where a run did not record one)."""
    tasks = [t["region"] for t in heldout.values() if t.get("region", {}).get("n")]
    n = sum(t["n"] for t in tasks)
    return {
        key: sum(t[field] * t["n"] for t in tasks) / n
        if n and all(field in t for t in tasks)
        else None
        for key, field in (("region_accuracy", "accuracy"), ("region_majority", "majority"))
    }


# -- aggregation ----------------------------------------------------------------------------------


def spread_of(values: Sequence[float], kind: str = "half_range") -> float:
    """Half-range ((max - min) / 2) or sample std of ``values`` (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    if kind == "half_range":
        return (max(values) - min(values)) / 2
    if kind == "std":
        return statistics.stdev(values)
    raise ValueError(f"spread {kind!r}: expected half_range | std")


def _mean_known(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def aggregate(rows: Sequence[RunRow], spread: str = "half_range") -> list[Group]:
    """One group per (variant, precision, mode), in row order: n, mean / spread per metric, the
    non-finite steps over seeds (sum, earliest first step) and the mean seconds per iteration."""
    groups: dict[tuple[str, str, str], list[RunRow]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["precision"], r["mode"]), []).append(r)
    out = []
    for (variant, precision, mode), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        mean: dict[str, float] = {}
        spreads: dict[str, float] = {}
        for key in METRIC_KEYS:
            vals = [v for r in ok if (v := metric(r["eval"], key)) is not None]
            if vals:
                mean[key] = statistics.fmean(vals)
                spreads[key] = spread_of(vals, spread)
        nf = [r["nonfinite_steps"] for r in ok if r["nonfinite_steps"] is not None]
        firsts = [r["first_nonfinite"] for r in ok if r["first_nonfinite"] is not None]

        g: Group = {
            "variant": variant,
            "label": rs[0]["label"],
            "precision": precision,
            "mode": mode,
            "seeds": [r["seed"] for r in ok],
            "runs": len(rs),
            "failed": [r["seed"] for r in rs if r["status"] != "ok"],
            "mean": mean,
            "spread": spreads,
            "nonfinite_steps": sum(nf) if nf else None,
            "first_nonfinite": min(firsts) if firsts else None,
            "s_per_iter": _mean_known([r["s_per_iter"] for r in ok]),
            "cpu_s_per_iter": _mean_known([r["cpu_s_per_iter"] for r in ok]),
            "loss_scale_final": _mean_known([r["loss_scale_final"] for r in ok]),
        }
        out.append(g)
    return out
