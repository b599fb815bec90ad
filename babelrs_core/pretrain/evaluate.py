"""Held-out evaluation of the pretrained model: greedy decoding of the held-out prompts, scored
per modality and task.

Accuracy is the exact match of the normalised answer (lower case, no punctuation) for the region,
count, presence and listing tasks; captions are scored by word-level F1 (exact match of a free
caption is meaningless). Chance for region classification is 1 / (number of offered classes).
Every exact-match task also gets its majority-answer baseline (``majority``): the accuracy of
always giving the most frequent normalised answer of that modality and task in the held-out
prompts (:func:`majority_baseline`; "yes" for presence, the commonest count for counting).
The scores go into ``metrics.json`` through :mod:`babelrs_core.pretrain.export`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import torch

from babelrs_core.config import Params
from babelrs_core.pretrain.dataset import Encoded, PretrainData
from babelrs_core.pretrain.instructions import normalize_answer
from babelrs_core.pretrain.model import AlignModel

EVAL_BATCH = 32


def word_f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def majority_baseline(answers: list[str]) -> float:
    """Accuracy of always answering the most frequent of ``answers`` (normalised; 0 if none)."""
    counts = Counter(normalize_answer(a) for a in answers)
    return max(counts.values()) / len(answers) if answers else 0.0


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
        prompts = [[*e.question, *data.sep_ids] for e in chunk]
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
    records: list[dict[str, Any]] = []
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
        per: dict[str, dict[str, Any]] = {}
        for task, vals in sorted(scores[mod].items()):
            key = "word_f1" if task == "caption" else "accuracy"
            per[task] = {key: sum(vals) / len(vals), "n": len(vals)}
            if task != "caption":
                per[task]["majority"] = majority_baseline(
                    [r["answer"] for r in records if r["modality"] == mod and r["task"] == task]
                )
        if "region" in per:
            per["region"]["chance"] = 1.0 / len(data.classes[ds_of[mod]])
            region = [r for r in records if r["modality"] == mod and r["task"] == "region"]
            confusion: dict[str, Counter] = defaultdict(Counter)
            for r in region:
                confusion[normalize_answer(r["answer"])][normalize_answer(r["prediction"])] += 1
            per["region"]["confusion"] = {k: dict(v) for k, v in sorted(confusion.items())}
        result[mod] = per
    return {"heldout": result, "examples": dict(examples), "records": records}
