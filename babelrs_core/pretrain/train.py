"""The pretraining loop: CSIA loss on response tokens, LVSA annealing by optimizer step, AdamW with
warmup + cosine, gradient clipping, fp32 / bf16 / fp16-AMP, freeze switches, per-step metrics,
atomic checkpoints and exact resume, then the encoder export and the held-out evaluation.

Under ``torchrun`` (``params.distributed``) every process draws the same global batch of the step
(a pure function of seed and step) and trains on its slice; PyTorch DDP averages the gradients.
Each process's loss is its token-loss sum over the *global* token count times the world size, so
the averaged gradient is the gradient of the global batch's mean token loss, as in one process.
Rank 0 alone writes metrics, checkpoints and outputs and runs the evaluation.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from babelrs_core import distributed as dist_util
from babelrs_core.concepts import MODALITIES
from babelrs_core.config import Params, captions_for, flatten_dict
from babelrs_core.data.image_source import MB, open_source
from babelrs_core.fingerprint import Fingerprint
from babelrs_core.io.atomic import sweep_temporaries, write_text
from babelrs_core.models.encoders import VisionEncoder, build_encoder
from babelrs_core.models.lvsa import TapFusion, alpha
from babelrs_core.models.pivot import Pivot, TinyBertSpec, load_pivot
from babelrs_core.models.projector import Projector
from babelrs_core.pretrain import checkpoint as ckpt
from babelrs_core.pretrain.dataset import PretrainData, build_data
from babelrs_core.pretrain.model import AlignModel

#: ``log_metrics(step, metrics)``: called once per optimizer step with finite-or-not floats (e.g.
#: :class:`babelrs_core.tracking.MetricBuffer`, which sends them to MLflow in batches).
MetricsHook = Callable[[int, dict[str, float]], None]

#: params that may change between a run and its resume
_RESUME_FREE = {
    "checkpoint_every",
    "log_every",
    "eval_max_per_task",
    "max_new_tokens",
    "threads",
    "device",
}


class _StepLoss(nn.Module):
    """``forward(batch, step)`` = the token losses: what DDP wraps (it hooks ``forward``)."""

    def __init__(self, model: AlignModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.token_losses(batch, step)


class JsonlLogger:
    """Append one JSON line per step to ``path`` (the default ``log_metrics`` hook)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (a resumed run rewrites them)."""
        if not self.path.exists():
            return
        keep = [
            ln
            for ln in self.path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step
        ]
        write_text(self.path, "".join(ln + "\n" for ln in keep))

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")


def resolve_device(name: str) -> torch.device:
    return dist_util.resolve_device(name, "pretrain.device")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine down to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def fingerprint(params: Params) -> Fingerprint:
    """The params a checkpoint must agree with to be resumed (dotted keys)."""
    cfg = params.pretrain.model_dump(mode="json")
    kept = {k: v for k, v in cfg.items() if k not in _RESUME_FREE}
    flat: Fingerprint = {"seed": params.seed, "model.encoder": params.model.encoder}
    return flat | flatten_dict(kept, "pretrain")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(params: Params, pivot: Pivot) -> tuple[AlignModel, VisionEncoder]:
    """Encoder (+ weights), tap fusion, projector and the pivot as one :class:`AlignModel`."""
    cfg = params.pretrain
    encoder = build_encoder(
        params.model.encoder, pretrained=cfg.pretrained, weights=cfg.encoder_weights, bn=cfg.bn
    )
    layers = encoder.resolve_layers(cfg.lvsa.layers)
    taps = [encoder.tap_info(k) for k in layers]
    fusion = TapFusion(taps, cfg.lvsa.mode, cfg.lvsa.grid, cfg.lvsa.width)
    projector = Projector(fusion.out_channels, pivot.width, cfg.projector_hidden, cfg.pixel_shuffle)
    return AlignModel(encoder, layers, fusion, projector, pivot, cfg.lvsa.tau), encoder


def apply_freeze(model: AlignModel, params: Params) -> None:
    """Set ``requires_grad`` per part. Tied LM input/output embeddings follow ``lm_embeddings``."""
    fr = params.pretrain.freeze
    for p in model.parameters():
        p.requires_grad_(True)
    for module, frozen in (
        (model.encoder, fr.encoder),
        (model.fusion, fr.projector),
        (model.projector, fr.projector),
    ):
        for p in module.parameters():
            p.requires_grad_(not frozen)
    pivot = model.pivot
    norm = pivot.final_norm()
    head = [pivot.head] + ([norm] if norm is not None else [])
    for m in head:
        for p in m.parameters():
            p.requires_grad_(not fr.lm_head)
    for layer in list(pivot.layers())[: fr.lm_layers]:
        for p in layer.parameters():
            p.requires_grad_(False)
    if fr.lm_embeddings:
        lm: Any = pivot.model  # a transformers model: its parts are untyped attributes
        emb = lm.bert.embeddings if pivot.is_bert else lm.get_input_embeddings()
        for p in emb.parameters():
            p.requires_grad_(False)


def param_groups(model: AlignModel, params: Params) -> list[dict[str, Any]]:
    """AdamW groups: per-part learning rates; no weight decay on 1-D parameters (bias, norms)."""
    cfg = params.pretrain
    parts = (
        ("encoder", model.encoder, cfg.lr * cfg.lr_scale_encoder),
        ("projector", nn.ModuleList([model.fusion, model.projector]), cfg.lr),
        ("lm", model.pivot, cfg.lr * cfg.lr_scale_lm),
    )
    groups, seen = [], set()
    for name, module, lr in parts:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.ndim >= 2 else no_decay).append(p)
        for ps, wd, tag in ((decay, cfg.weight_decay, ""), (no_decay, 0.0, "/no_decay")):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name + tag})
    if not groups:
        raise ValueError("pretrain.freeze: every part is frozen, nothing to train")
    return groups


def guarded_step(
    loss: torch.Tensor,
    value: float,
    scaler: Any,
    optimizer: Any,
    scheduler: Any,
    trainable: Sequence[torch.Tensor],
    max_norm: float,
) -> tuple[float, bool]:
    """Backward through the loss scaler, clip to ``max_norm``, step unless the loss ``value`` or
    the gradient norm is not finite (the scaler skips such steps itself), advance the schedule.
    Returns the pre-clip gradient norm and whether the step was finite."""
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm))
    finite = math.isfinite(value) and math.isfinite(grad_norm)
    if scaler.is_enabled():
        scaler.step(optimizer)  # skips the update itself on inf / nan gradients
        scaler.update()
    elif finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return grad_norm, finite


def autocast_for(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _encode_fn(pivot: Pivot) -> Callable[[str], list[int]]:
    tok = pivot.tokenizer
    return lambda text: tok.encode(text, add_special_tokens=False)


def pivot_for(params: Params) -> Pivot:
    """The language model of ``pretrain.language_model`` (seeded; no download)."""
    cfg = params.pretrain
    tiny = TinyBertSpec(
        cfg.tiny_lm.hidden_size,
        cfg.tiny_lm.layers,
        cfg.tiny_lm.heads,
        cfg.tiny_lm.intermediate_size,
    )
    return load_pivot(cfg.language_model, tiny, seed=params.seed, dropout=cfg.lm_dropout)


def pretrain_data(params: Params, manifest: Path, pivot: Pivot) -> PretrainData:
    """The pretraining data of ``manifest`` as ``params.pretrain`` asks, tokenised by ``pivot``,
    pixels through the params' image source."""
    cfg = params.pretrain
    return build_data(
        manifest,
        _encode_fn(pivot),
        image_size=cfg.image_size,
        holdout_fraction=cfg.holdout_fraction,
        eval_splits=cfg.eval_splits,
        seed=params.seed,
        captions=captions_for(params, manifest),
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_answer_tokens=cfg.max_answer_tokens,
        eos_id=pivot.eos_id,
        sep_ids=pivot.sep_ids,
        pad_id=pivot.pad_id,
        task_weights=cfg.tasks.model_dump(),
        eval_max_per_task=cfg.eval_max_per_task,
        region_token=cfg.region_token,
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        region_prefix_dropout=cfg.region_prefix_dropout,
        region_roi_dropout=cfg.region_roi_dropout,
        source=open_source(params, cache=False),
        max_pixel_bytes=int(params.images.cache_mb * MB),
    )


def prepare(params: Params, manifest: Path) -> tuple[AlignModel, PretrainData]:
    """Seeded construction of the model and the data (identical on every (re)run)."""
    seed_everything(params.seed)
    pivot = pivot_for(params)
    model, _ = build_model(params, pivot)
    apply_freeze(model, params)
    return model, pretrain_data(params, manifest, pivot)


def run_pretraining(
    params: Params,
    manifest: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    callbacks: Iterable[MetricsHook] = (),
    stop_after: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train, export the encoder and evaluate; returns a JSON-able summary. With
    ``pretrain.objective: classification`` the no-language control trains instead
    (:mod:`babelrs_core.pretrain.classify`, same outputs for the detector).

    Outputs under ``out`` (default ``params.paths.pretrain_out``): ``encoder.safetensors``,
    ``encoder.json``, ``projector.safetensors``, ``metrics.json``, ``metrics.jsonl`` and
    ``checkpoints/``. With ``resume`` a rerun continues from the newest checkpoint.
    ``stop_after`` ends the process-equivalent of a crash after that many steps (tests).
    Under ``torchrun`` the processes train together; ranks other than 0 return ``{"rank": r}``.
    """
    if params.pretrain.threads:
        torch.set_num_threads(params.pretrain.threads)
    device = resolve_device(params.pretrain.device)
    if params.pretrain.objective == "classification":
        from babelrs_core.pretrain.classify import run_classification

        return run_classification(params, device, manifest, out, resume, callbacks, stop_after)
    with dist_util.process_group(device, params.distributed.backend):
        return _run(params, device, manifest, out, resume, callbacks, stop_after, progress)


def _run(
    params: Params,
    device: torch.device,
    manifest: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] | None,
    resume: bool,
    callbacks: Iterable[MetricsHook],
    stop_after: int | None,
    progress: bool,
) -> dict[str, Any]:
    from babelrs_core.pretrain.evaluate import evaluate
    from babelrs_core.pretrain.export import export_outputs

    cfg = params.pretrain
    manifest = Path(manifest or params.paths.manifest)
    out = Path(out or params.paths.pretrain_out)
    ckpt_dir = out / "checkpoints"
    main, world, rank = dist_util.is_main(), dist_util.world_size(), dist_util.rank()
    local_bs = cfg.batch_size // world  # params validation: batch_size is a multiple of world
    t0 = time.perf_counter()
    model, data = prepare(params, manifest)
    model.to(device)
    step_loss: nn.Module = _StepLoss(model)
    if world > 1:
        if cfg.bn == "train" and device.type == "cuda":
            step_loss = nn.SyncBatchNorm.convert_sync_batchnorm(step_loss)
        # some trainable parts sit out a step (e.g. region tokens when no region prompt is drawn)
        step_loss = nn.parallel.DistributedDataParallel(step_loss, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(
        param_groups(model, params), betas=(0.9, 0.999), eps=1e-8, foreach=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    logger = JsonlLogger(out / "metrics.jsonl")
    hooks: list[MetricsHook] = [logger, *callbacks] if main else []
    fp = fingerprint(params)

    start, nonfinite = 0, 0
    latest = ckpt.latest_checkpoint(ckpt_dir) if resume else None
    # every rank loads the checkpoint: on several nodes they must all see the same one
    dist_util.agree(
        latest and latest.name,
        f"the checkpoint to resume from in {ckpt_dir}",
        dist_util.SHARED_OUTPUTS_HINT.format(key="paths.pretrain_out"),
    )
    if latest is not None:
        start, nonfinite = ckpt.resume_from(latest, fp, device, model, optimizer, scheduler, scaler)
        if main:
            logger.truncate_after(start)
    elif main:
        for old in ckpt.list_checkpoints(ckpt_dir):
            old.unlink()
        logger.path.unlink(missing_ok=True)
    if main:
        for folder in (out, ckpt_dir):  # half-written files of a killed run (never read)
            sweep_temporaries(folder)
    dist_util.barrier()  # every rank has read the checkpoint before rank 0 writes new ones

    def save(step: int) -> None:
        if not main:
            return
        ckpt.save_checkpoint(
            ckpt_dir,
            step,
            ckpt.training_state(model, optimizer, scheduler, scaler, fp, nonfinite),
        )

    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    losses: list[float] = []
    t_train, c_train = time.perf_counter(), time.process_time()
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="pretrain", unit="step")
    for step in range(start, cfg.steps):
        ts = time.perf_counter()
        idx, flips, drops = data.draw(step, cfg.batch_size, params.seed)
        mine = slice(rank * local_bs, (rank + 1) * local_bs)  # this process's share of the step
        idx, flips, drops = idx[mine], flips[mine], drops[mine]
        batch = data.collate([data.train[i] for i in idx], flips=flips, drops=drops)
        batch.images, batch.text_ids = batch.images.to(device), batch.text_ids.to(device)
        batch.text_mask, batch.labels = batch.text_mask.to(device), batch.labels.to(device)
        batch.region_at, batch.boxes = batch.region_at.to(device), batch.boxes.to(device)
        batch.drop_prefix = _on(batch.drop_prefix, device)  # the visual-dropout masks (or None)
        batch.drop_roi = _on(batch.drop_roi, device)
        with autocast_for(cfg.precision, device):
            tok_losses, rows = step_loss(batch, step)
        mods = [batch.modalities[r] for r in rows.tolist()]
        sums = _global_sums(tok_losses.detach(), mods)  # summed over ranks: [loss, n, per mod]
        n_tokens = max(float(sums[1]), 1.0)
        # global mean token loss once DDP has averaged the ranks' gradients (see module doc)
        loss = tok_losses.sum() * (world / n_tokens)
        global_loss = float(sums[0]) / n_tokens
        grad_norm, finite = guarded_step(
            loss, global_loss, scaler, optimizer, scheduler, trainable, cfg.clip_grad_norm
        )
        nonfinite += int(not finite)

        metrics: dict[str, float] = {
            "loss": global_loss,
            "grad_norm": grad_norm,
            "alpha": alpha(step, cfg.lvsa.tau),
            "lr": cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio),
            "nonfinite_steps": nonfinite,
        }
        for k, m in enumerate(MODALITIES):  # a modality absent from this batch has no key
            if float(sums[3 + 2 * k]) > 0:
                metrics[f"loss_{m}"] = float(sums[2 + 2 * k]) / float(sums[3 + 2 * k])
        metrics["samples_per_s"] = cfg.batch_size / max(time.perf_counter() - ts, 1e-9)
        for hook in hooks:
            hook(step + 1, metrics)
        losses.append(global_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{global_loss:.3f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or done == stop_after:
            save(done)
        if stop_after is not None and done >= stop_after and done < cfg.steps:
            if bar is not None:
                bar.close()
            dist_util.barrier()
            return {"stopped_at": done, "out": str(out)}
    if bar is not None:
        bar.close()
    train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - c_train
    dist_util.barrier()  # the last checkpoint is written before any rank leaves
    if not main:
        return {"rank": rank, "steps_this_run": cfg.steps - start}

    t_eval = time.perf_counter()
    heldout = evaluate(model, data, params, device)
    eval_s = time.perf_counter() - t_eval
    history = _read_losses(logger.path)
    summary = export_outputs(
        out,
        model,
        data,
        params,
        heldout,
        history,
        {
            "total_s": time.perf_counter() - t0,
            "train_s": train_s,
            "train_cpu_s": train_cpu_s,  # this process's CPU time (all its threads)
            "eval_s": eval_s,
            "steps_this_run": cfg.steps - start,
            "resumed_from": start,
            "nonfinite_steps": nonfinite,
        },
    )
    return summary


def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def _global_sums(tok_losses: torch.Tensor, mods: Sequence[str]) -> torch.Tensor:
    """[loss sum, token count, (sum, count) per modality] of this step, summed over all ranks."""
    vals: list[torch.Tensor | float] = [tok_losses.float().sum(), torch.tensor(float(len(mods)))]
    for m in MODALITIES:
        sel = [i for i, mm in enumerate(mods) if mm == m]
        vals += [tok_losses[sel].float().sum() if sel else torch.tensor(0.0), float(len(sel))]
    out = torch.tensor([float(v) for v in vals], dtype=torch.float64, device=tok_losses.device)
    if dist_util.active():
        torch.distributed.all_reduce(out)
    return out.cpu()


def _read_losses(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def trainable_summary(model: AlignModel) -> dict[str, int]:
    """Trainable / total parameter counts per part."""
    out = {}
    for name, module in (
        ("encoder", model.encoder),
        ("fusion", model.fusion),
        ("projector", model.projector),
        ("lm", model.pivot),
    ):
        ps = list(module.parameters())
        out[f"{name}_trainable"] = sum(p.numel() for p in ps if p.requires_grad)
        out[f"{name}_total"] = sum(p.numel() for p in ps)
    return out


def modalities_of(items: Sequence[Any]) -> list[str]:
    return sorted({i.modality for i in items})
