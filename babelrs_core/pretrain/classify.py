"""The no-language control of CSIA (``pretrain.objective: classification``, docs/ablation.md).

The same encoder and LVSA tap fusion as CSIA, trained on the same region labels for the same
steps, with the same optimiser (AdamW, the same parameter groups and weight decay rule), the same
warmup + cosine schedule, gradient clipping, precision and flips, but through a plain
classification head instead of the projector and the language model: the fused map is RoI-aligned
on the region's box (``pixel_shuffle`` x ``pixel_shuffle`` bins, as CSIA's region token) and a
LayerNorm + one linear layer scores the classes of the image's dataset (cross-entropy; one output
per (dataset, class), the other datasets' outputs masked).

Its data are the region prompts of :func:`babelrs_core.pretrain.train.pretrain_data` (the other
CSIA tasks are language and have no classification counterpart), the same held-out images, drawn
by the same ``PretrainData.draw`` (modalities equally likely). It writes what the detector loads
(``encoder.safetensors`` + ``encoder.json``, :func:`~babelrs_core.pretrain.export.export_encoder`)
plus ``classifier.safetensors``, ``metrics.json`` (held-out region accuracy, timings) and
``metrics.jsonl``. One process only (no DDP); a rerun resumes from the newest checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from babelrs_core import distributed as dist_util
from babelrs_core.config import Params, captions_for
from babelrs_core.data.image_source import MB, open_source
from babelrs_core.io.atomic import sweep_temporaries, write_json
from babelrs_core.models.encoders import VisionEncoder, build_encoder
from babelrs_core.models.lvsa import TapFusion, alpha
from babelrs_core.models.projector import roi_align
from babelrs_core.pretrain import checkpoint as ckpt
from babelrs_core.pretrain.dataset import Encoded, PretrainData, build_data
from babelrs_core.pretrain.instructions import concept_of, sentence, with_article

EVAL_BATCH = 32


class RegionClassifier(nn.Module):
    """Encoder -> LVSA tap fusion -> RoI-align on the box -> LayerNorm -> Linear over classes."""

    def __init__(
        self,
        encoder: VisionEncoder,
        layers: Sequence[int],
        fusion: TapFusion,
        classes: dict[str, list[str]],
        pool: int,
        tau: int,
    ) -> None:
        super().__init__()
        self.encoder, self.layers, self.fusion = encoder, list(layers), fusion
        self.pool, self.tau = pool, tau
        self.labels = [(ds, c) for ds in sorted(classes) for c in classes[ds]]
        dim = fusion.out_channels * pool * pool
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, len(self.labels))
        allowed = torch.zeros(len(classes), len(self.labels), dtype=torch.bool)
        self.datasets = sorted(classes)
        for k, (ds, _) in enumerate(self.labels):
            allowed[self.datasets.index(ds), k] = True
        self.register_buffer("allowed", allowed, persistent=False)

    def head_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.fusion, self.norm, self.fc])

    def _allowed(self) -> torch.Tensor:
        allowed = self.get_buffer("allowed")
        return allowed

    def forward(
        self, images: torch.Tensor, boxes: torch.Tensor, datasets: Sequence[str], step: int
    ) -> torch.Tensor:
        """Class scores (B, labels) of each image's box; other datasets' classes at -inf."""
        fmap = self.fusion(self.encoder.forward_taps(images, self.layers), step, self.tau)
        roi = roi_align(fmap, boxes.to(fmap.dtype), self.pool).flatten(1)
        logits = self.fc(self.norm(roi)).float()
        rows = torch.tensor([self.datasets.index(d) for d in datasets], device=logits.device)
        return logits.masked_fill(~self._allowed()[rows], float("-inf"))


def region_data(params: Params, manifest: Path) -> PretrainData:
    """The region prompts of the CSIA data (same held-out images, flips, normalisation), without
    a tokenizer: the texts are not used."""
    cfg = params.pretrain
    return build_data(
        manifest,
        lambda text: [1],
        image_size=cfg.image_size,
        holdout_fraction=cfg.holdout_fraction,
        eval_splits=cfg.eval_splits,
        seed=params.seed,
        captions=captions_for(params, manifest),
        eos_id=0,
        task_weights={t: (1.0 if t == "region" else 0.0) for t in cfg.tasks.model_dump()},
        eval_max_per_task=cfg.eval_max_per_task,
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        source=open_source(params, cache=False),
        max_pixel_bytes=int(params.images.cache_mb * MB),
    )


def targets(data: PretrainData, model: RegionClassifier, items: Sequence[Encoded]) -> torch.Tensor:
    """The label index of each region prompt (its answer is "A <class>." of its dataset)."""
    answer = {
        (ds, sentence(with_article(concept_of(ds, c)))): k for k, (ds, c) in enumerate(model.labels)
    }
    return torch.tensor([answer[(e.text.dataset, e.text.answer)] for e in items])


def build_classifier(params: Params, data: PretrainData) -> RegionClassifier:
    cfg = params.pretrain
    encoder = build_encoder(
        params.model.encoder, pretrained=cfg.pretrained, weights=cfg.encoder_weights, bn=cfg.bn
    )
    layers = encoder.resolve_layers(cfg.lvsa.layers)
    fusion = TapFusion(
        [encoder.tap_info(k) for k in layers], cfg.lvsa.mode, cfg.lvsa.grid, cfg.lvsa.width
    )
    model = RegionClassifier(encoder, layers, fusion, data.classes, cfg.pixel_shuffle, cfg.lvsa.tau)
    for p in model.parameters():
        p.requires_grad_(True)
    for p in model.encoder.parameters():
        p.requires_grad_(not cfg.freeze.encoder)
    for p in model.fusion.parameters():
        p.requires_grad_(not cfg.freeze.projector)
    return model


def param_groups(model: RegionClassifier, params: Params) -> list[dict[str, Any]]:
    """AdamW groups as CSIA's: encoder at lr x lr_scale_encoder, the rest at lr; no weight decay
    on 1-D parameters."""
    cfg = params.pretrain
    groups = []
    for name, module, lr in (
        ("encoder", model.encoder, cfg.lr * cfg.lr_scale_encoder),
        ("head", model.head_modules(), cfg.lr),
    ):
        ps = [p for p in module.parameters() if p.requires_grad]
        for sel, wd, tag in ((2, cfg.weight_decay, ""), (1, 0.0, "/no_decay")):
            chosen = [p for p in ps if (p.ndim >= 2) == (sel == 2)]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": wd, "name": name + tag})
    return groups


def _batch(
    data: PretrainData, items: Sequence[Encoded], flips: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    boxes = [e.view(f)[2] or (0.0, 0.0, 1.0, 1.0) for e, f in zip(items, flips, strict=True)]
    images = data.normalized([e.image for e in items], flips).to(device)
    return images, torch.tensor(boxes, device=device), [e.text.dataset for e in items]


def run_classification(
    params: Params,
    device: torch.device,
    manifest: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    callbacks: Iterable[Any] = (),
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the region classifier, export the encoder and score the held-out regions."""
    from babelrs_core.pretrain.export import export_encoder, save_safetensors
    from babelrs_core.pretrain.train import (
        JsonlLogger,
        autocast_for,
        fingerprint,
        guarded_step,
        lr_factor,
        seed_everything,
    )

    if params.distributed.world_size > 1 or dist_util.world_size() > 1:
        raise ValueError("pretrain.objective=classification runs in one process (no torchrun)")
    cfg = params.pretrain
    manifest = Path(manifest or params.paths.manifest)
    out = Path(out or params.paths.pretrain_out)
    ckpt_dir = out / "checkpoints"
    t0 = time.perf_counter()
    seed_everything(params.seed)
    data = region_data(params, manifest)
    model = build_classifier(params, data).to(device)
    labels = targets(data, model, data.train)
    optimizer = torch.optim.AdamW(param_groups(model, params), betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    logger = JsonlLogger(out / "metrics.jsonl")
    hooks = [logger, *callbacks]
    fp = fingerprint(params)
    start, nonfinite = 0, 0
    latest = ckpt.latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        start, nonfinite = ckpt.resume_from(latest, fp, device, model, optimizer, scheduler, scaler)
        logger.truncate_after(start)
    else:
        for old in ckpt.list_checkpoints(ckpt_dir):
            old.unlink()
        logger.path.unlink(missing_ok=True)
    for folder in (out, ckpt_dir):
        sweep_temporaries(folder)

    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    t_train, c_train = time.perf_counter(), time.process_time()
    for step in range(start, cfg.steps):
        ts = time.perf_counter()
        idx, flips, _ = data.draw(step, cfg.batch_size, params.seed)
        images, boxes, dss = _batch(data, [data.train[i] for i in idx], flips, device)
        y = labels[idx].to(device)
        with autocast_for(cfg.precision, device):
            logits = model(images, boxes, dss, step)
        loss = F.cross_entropy(logits, y)
        value = float(loss.detach())
        grad_norm, finite = guarded_step(
            loss, value, scaler, optimizer, scheduler, trainable, cfg.clip_grad_norm
        )
        nonfinite += int(not finite)
        metrics = {
            "loss": value,
            "accuracy": float((logits.argmax(1) == y).float().mean()),
            "grad_norm": grad_norm,
            "alpha": alpha(step, cfg.lvsa.tau),
            "lr": cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio),
            "nonfinite_steps": nonfinite,
            "samples_per_s": cfg.batch_size / max(time.perf_counter() - ts, 1e-9),
        }
        for hook in hooks:
            hook(step + 1, metrics)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or done == stop_after:
            ckpt.save_checkpoint(
                ckpt_dir,
                done,
                ckpt.training_state(model, optimizer, scheduler, scaler, fp, nonfinite),
            )
        if stop_after is not None and done >= stop_after and done < cfg.steps:
            return {"stopped_at": done, "out": str(out)}
    train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - c_train

    t_eval = time.perf_counter()
    heldout = evaluate(model, data, params, device)
    eval_s = time.perf_counter() - t_eval
    export_encoder(out, model.encoder, model.layers, model.fusion, params, data.norm)
    save_safetensors(
        {
            **{f"fusion.{k}": v for k, v in model.fusion.state_dict().items()},
            **{f"norm.{k}": v for k, v in model.norm.state_dict().items()},
            **{f"fc.{k}": v for k, v in model.fc.state_dict().items()},
        },
        out / "classifier.safetensors",
    )
    history = [h["loss"] for h in _losses(logger.path)]
    timing = {
        "total_s": time.perf_counter() - t0,
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "eval_s": eval_s,
        "steps_this_run": cfg.steps - start,
        "resumed_from": start,
        "nonfinite_steps": nonfinite,
    }
    metrics_json: dict[str, Any] = {
        "objective": "classification",
        "steps": cfg.steps,
        "final_loss": history[-1] if history else None,
        "final_loss_mean20": sum(history[-20:]) / len(history[-20:]) if history else None,
        "first_loss_mean20": sum(history[:20]) / len(history[:20]) if history else None,
        "nonfinite_steps": nonfinite,
        "heldout": heldout,
        "region_accuracy": {m: v["region"]["accuracy"] for m, v in heldout.items()},
        "region_chance": {m: v["region"]["chance"] for m, v in heldout.items()},
        "examples": [],
        "data": data.counts(),
        "timing": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in timing.items()},
        "samples_per_s": cfg.batch_size * timing["steps_this_run"] / train_s if train_s else None,
        "params": {
            "encoder": params.model.encoder,
            "objective": cfg.objective,
            "image_size": cfg.image_size,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "lvsa": cfg.lvsa.model_dump(),
            "precision": cfg.precision,
            "seed": params.seed,
        },
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    write_json(out / "metrics.json", metrics_json)
    return metrics_json


@torch.no_grad()
def evaluate(
    model: RegionClassifier, data: PretrainData, params: Params, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Held-out region accuracy per modality (no flips); chance = mean 1 / classes offered;
    majority = always answering the modality's commonest held-out class."""
    from babelrs_core.pretrain.evaluate import majority_baseline

    was = model.training
    model.eval()
    items = [e for e in data.heldout if e.task == "region"]
    hits: dict[str, list[bool]] = {}
    chance: dict[str, list[float]] = {}
    truth: dict[str, list[str]] = {}
    for i in range(0, len(items), EVAL_BATCH):
        chunk = items[i : i + EVAL_BATCH]
        images, boxes, dss = _batch(data, chunk, [0] * len(chunk), device)
        pred = model(images, boxes, dss, params.pretrain.steps).argmax(1).cpu()
        for e, p, t in zip(chunk, pred.tolist(), targets(data, model, chunk).tolist(), strict=True):
            hits.setdefault(e.modality, []).append(p == t)
            truth.setdefault(e.modality, []).append(str(t))
            chance.setdefault(e.modality, []).append(1 / len(data.classes[e.text.dataset]))
    model.train(was)
    out: dict[str, dict[str, Any]] = {}
    for m, h in sorted(hits.items()):
        score = {"accuracy": sum(h) / len(h), "chance": sum(chance[m]) / len(chance[m])}
        score["majority"] = majority_baseline(truth[m])
        score["n"] = len(h)
        out[m] = {"region": score}
    return out


def _losses(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
