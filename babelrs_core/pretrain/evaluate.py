"""Held-out evaluation (greedy decoding), the output files, and the docs/results.md section.

Accuracy is the exact match of the normalised answer (lower case, no punctuation) for the region,
count, presence and listing tasks; captions are scored by word-level F1 (exact match of a free
caption is meaningless). Chance for region classification is 1 / (number of offered classes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from babelrs_core.concepts import MODALITIES
from babelrs_core.config import Params
from babelrs_core.io.atomic import atomic_path, write_json, write_text
from babelrs_core.io.hashing import file_sha256
from babelrs_core.models.encoders import ENCODER_JSON_FORMAT
from babelrs_core.pretrain.dataset import Encoded, PretrainData
from babelrs_core.pretrain.instructions import normalize_answer
from babelrs_core.pretrain.model import AlignModel

EVAL_BATCH = 32
SECTION = "## Pretraining (CSIA + LVSA)"
REPRODUCE = (
    ".venv/bin/babelrs data generate && .venv/bin/babelrs data import && "
    '.venv/bin/python -c "from babelrs_core.config import load_params; '
    'from babelrs_core import stages; stages.pretrain(load_params(), resume=False)" && '
    ".venv/bin/python -m babelrs_core.pretrain.evaluate "
    "outputs/pretrain/metrics.json docs/results.md"
)


def word_f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


@torch.no_grad()
def predict(
    model: AlignModel,
    data: PretrainData,
    items: list[Encoded],
    params: Params,
    device: torch.device,
) -> list[str]:
    """Greedy answers for ``items`` (batched, left-padded, KV cache)."""
    from babelrs_core.pretrain.train import autocast_for

    cfg = params.pretrain
    tok = model.pivot.tokenizer
    was_training = model.training
    model.eval()
    answers: list[str] = []
    step = cfg.steps  # alpha as at the end of training
    for i in range(0, len(items), EVAL_BATCH):
        chunk = items[i : i + EVAL_BATCH]
        images = data.normalized([e.image for e in chunk]).to(device)
        prompts = [e.question + data.sep_ids for e in chunk]
        limit = max(
            cfg.max_answer_tokens if e.task == "caption" else cfg.max_new_tokens for e in chunk
        )
        boxes = torch.tensor([e.text.box or (0.0, 0.0, 0.0, 0.0) for e in chunk])
        with autocast_for(cfg.precision, device):
            out = model.generate(
                images,
                prompts,
                limit,
                step,
                model.pivot.eos_id,
                [e.region_at for e in chunk],
                boxes,
            )
        answers += [tok.decode(seq, skip_special_tokens=True) for seq in out]
    model.train(was_training)
    return answers


def evaluate(
    model: AlignModel, data: PretrainData, params: Params, device: torch.device
) -> dict[str, Any]:
    """Per modality and task: accuracy (or caption word F1), n, and region chance."""
    items = sorted(data.heldout, key=lambda e: (e.task == "caption", e.modality, e.task))
    preds = predict(model, data, items, params, device) if items else []
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    examples: dict[str, list[dict[str, str]]] = defaultdict(list)
    records = []
    for e, pred in zip(items, preds, strict=True):
        if e.task == "caption":
            s = word_f1(pred, e.text.answer)
        else:
            s = float(normalize_answer(pred) == normalize_answer(e.text.answer))
        scores[e.modality][e.task].append(s)
        records.append(
            {
                "image_id": e.text.image_id,
                "modality": e.modality,
                "task": e.task,
                "question": e.text.question,
                "answer": e.text.answer,
                "prediction": pred,
                "score": s,
            }
        )
        if len(examples[e.modality]) < 4 and e.task == "region":
            examples[e.modality].append(
                {"question": e.text.question, "answer": e.text.answer, "prediction": pred}
            )
    ds_of = {e.modality: e.text.dataset for e in data.train + data.heldout}
    result: dict[str, Any] = {}
    for mod in sorted(scores):
        per = {}
        for task, vals in sorted(scores[mod].items()):
            key = "word_f1" if task == "caption" else "accuracy"
            per[task] = {key: sum(vals) / len(vals), "n": len(vals)}
        if "region" in per:
            per["region"]["chance"] = 1.0 / len(data.classes[ds_of[mod]])
            region = [r for r in records if r["modality"] == mod and r["task"] == "region"]
            answers = Counter(normalize_answer(r["answer"]) for r in region)
            per["region"]["majority"] = max(answers.values()) / len(region)
            confusion: dict[str, Counter] = defaultdict(Counter)
            for r in region:
                confusion[normalize_answer(r["answer"])][normalize_answer(r["prediction"])] += 1
            per["region"]["confusion"] = {k: dict(v) for k, v in sorted(confusion.items())}
        result[mod] = per
    return {"heldout": result, "examples": dict(examples), "records": records}


def _save_safetensors(tensors: dict[str, torch.Tensor], target: Path) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp))


def export_outputs(
    out: Path,
    model: AlignModel,
    data: PretrainData,
    params: Params,
    heldout: dict[str, Any],
    history: list[dict[str, Any]],
    timing: dict[str, Any],
) -> dict[str, Any]:
    """Write ``encoder.safetensors`` + ``encoder.json``, ``projector.safetensors`` and
    ``metrics.json``; return the metrics."""
    cfg = params.pretrain
    enc = model.encoder
    weights = out / "encoder.safetensors"
    _save_safetensors(enc.state_dict(), weights)
    _save_safetensors(
        {
            **{f"fusion.{k}": v for k, v in model.fusion.state_dict().items()},
            **{f"projector.{k}": v for k, v in model.projector.state_dict().items()},
        },
        out / "projector.safetensors",
    )
    taps = [enc.tap_info(k) for k in model.layers]
    info = {
        "format": ENCODER_JSON_FORMAT,
        "encoder": params.model.encoder,
        "arch": enc.arch_kwargs,
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "num_layers": enc.num_layers,
        "layer_index": "hidden-state index: 0 = stem / patch embedding, k = output of block k "
        "(1-based); docs/pretraining.md",
        "taps": [{"layer": t.layer, "channels": t.channels, "stride": t.stride} for t in taps],
        "image_size": cfg.image_size,
        "input": {
            "channels": 3,
            "one_channel": "replicate: grey SAR / IR images are copied to 3 channels",
            "normalize": "x in 0..255, then (x - mean) / std with the modality's statistics",
        },
        "normalization": data.norm,
        "lvsa": {
            "mode": cfg.lvsa.mode,
            "layers": model.layers,
            "tau": cfg.lvsa.tau,
            "grid": model.fusion.grid,
            "width": model.fusion.width,
        },
        "language_model": cfg.language_model,
        "steps": cfg.steps,
    }
    write_json(out / "encoder.json", info)
    losses = [h["loss"] for h in history if h.get("loss") is not None]
    tail = losses[-20:]
    metrics = {
        "steps": cfg.steps,
        "final_loss": losses[-1] if losses else None,
        "final_loss_mean20": sum(tail) / len(tail) if tail else None,
        "first_loss_mean20": sum(losses[:20]) / len(losses[:20]) if losses else None,
        "nonfinite_steps": timing.get("nonfinite_steps", 0),
        "heldout": heldout["heldout"],
        "region_accuracy": {
            m: v["region"]["accuracy"] for m, v in heldout["heldout"].items() if "region" in v
        },
        "region_chance": {
            m: v["region"]["chance"] for m, v in heldout["heldout"].items() if "region" in v
        },
        "examples": heldout["examples"],
        "data": {
            "train_prompts": len(data.train),
            "heldout_prompts": len(data.heldout),
            "train_images": len({e.image for e in data.train}),
            "heldout_images": len({e.image for e in data.heldout}),
            "classes": data.classes,
        },
        "timing": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in timing.items()},
        "samples_per_s": (cfg.batch_size * timing["steps_this_run"] / timing["train_s"])
        if timing.get("train_s") and timing.get("steps_this_run")
        else None,
        "params": {
            "encoder": params.model.encoder,
            "language_model": cfg.language_model,
            "image_size": cfg.image_size,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "lvsa": cfg.lvsa.model_dump(),
            "freeze": cfg.freeze.model_dump(),
            "precision": cfg.precision,
            "seed": params.seed,
        },
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
    }
    write_json(out / "metrics.json", metrics)
    write_text(
        out / "predictions.jsonl",
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in heldout.get("records", [])),
    )
    return metrics


# -- docs/results.md ------------------------------------------------------------------------------
def results_markdown(
    metrics: dict[str, Any], source: str = "outputs/pretrain/metrics.json", note: str = ""
) -> str:
    """The "Pretraining (CSIA + LVSA)" section, generated from a run's ``metrics.json`` (``note``:
    a sentence about where and how the run was made)."""
    p = metrics["params"]
    held = metrics["heldout"]
    lines = [
        SECTION,
        "",
        f"Generated by `python -m babelrs_core.pretrain.evaluate` from `{source}`; do not edit by "
        "hand.",
        "",
        f"Run: encoder `{p['encoder']}`, language pivot `{p['language_model']}`, "
        f"{p['steps']} steps x batch {p['batch_size']}, image {p['image_size']} px, "
        f"LVSA mode `{p['lvsa']['mode']}` layers {p['lvsa']['layers']} tau {p['lvsa']['tau']}, "
        f"{p['precision']}, seed {p['seed']}, device {metrics.get('device')} "
        f"({metrics.get('threads')} threads).{' ' + note if note else ''}",
        "",
        f"Time: {metrics['timing'].get('total_s')} s in all "
        f"({metrics['timing'].get('train_s')} s training, {metrics['timing'].get('eval_s')} s "
        f"held-out evaluation); {metrics.get('samples_per_s') or 0:.1f} samples/s. Loss: "
        f"{metrics['first_loss_mean20']:.3f} (mean of the first 20 steps) -> "
        f"{metrics['final_loss_mean20']:.3f} (last 20); final step {metrics['final_loss']:.3f}; "
        f"non-finite steps: {metrics['nonfinite_steps']}.",
        "",
        "Held-out region classification (greedy decoding, exact match; chance = 1 / offered "
        "classes; majority class = always answering the most frequent held-out class):",
        "",
        "| modality | accuracy | chance | x chance | majority class | prompts |",
        "|---|---|---|---|---|---|",
    ]
    for mod in MODALITIES:
        r = held.get(mod, {}).get("region")
        if r:
            lines.append(
                f"| {mod.upper()} | {r['accuracy']:.3f} | "
                f"{r['chance']:.3f} | {r['accuracy'] / r['chance']:.2f} | "
                f"{r.get('majority', float('nan')):.3f} | {r['n']} |"
            )
    tasks = sorted({t for v in held.values() for t in v})
    lines += [
        "",
        "All held-out tasks (accuracy; caption: word F1; n in brackets):",
        "",
        "| modality | " + " | ".join(tasks) + " |",
        "|---" * (len(tasks) + 1) + "|",
    ]
    for mod in MODALITIES:
        if mod not in held:
            continue
        cells = []
        for t in tasks:
            v = held[mod].get(t)
            cells.append(
                "-" if v is None else f"{v.get('accuracy', v.get('word_f1')):.3f} ({v['n']})"
            )
        lines.append(f"| {mod} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce (2 CPU cores, offline):", "", "```bash", REPRODUCE, "```", ""]
    return "\n".join(lines)


def update_results_doc(
    metrics_path: str | os.PathLike[str], doc: str | os.PathLike[str], note: str = ""
) -> Path:
    """Replace (or append) the pretraining section of ``doc`` with one generated from a run."""
    metrics_path, doc = Path(metrics_path), Path(doc)
    metrics = json.loads(metrics_path.read_text())
    section = results_markdown(metrics, metrics_path.as_posix(), note)
    from babelrs_core.io.results_md import update_results_md

    update_results_md(doc, section, SECTION)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the pretraining section of docs/results.md")
    ap.add_argument("metrics", nargs="?", default="outputs/pretrain/metrics.json")
    ap.add_argument("doc", nargs="?", default="docs/results.md")
    ap.add_argument("--note", default="", help="a sentence on where / how the run was made")
    a = ap.parse_args(argv)
    print(update_results_doc(a.metrics, a.doc, a.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
