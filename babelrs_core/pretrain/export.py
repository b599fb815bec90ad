"""The pretraining stage's output files: ``encoder.safetensors`` + ``encoder.json`` (what the
detector loads), ``projector.safetensors``, ``metrics.json`` (losses, held-out scores, timings,
settings) and ``predictions.jsonl`` (every held-out answer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from babelrs_core.config import Params
from babelrs_core.io.atomic import atomic_path, write_json, write_text
from babelrs_core.io.hashing import file_sha256
from babelrs_core.models.encoders import (
    ENCODER_JSON_FORMAT,
    EncoderInfo,
    NormStats,
    VisionEncoder,
)
from babelrs_core.models.lvsa import TapFusion
from babelrs_core.pretrain.dataset import PretrainData
from babelrs_core.pretrain.model import AlignModel


def save_safetensors(tensors: dict[str, torch.Tensor], target: Path) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp))


def export_encoder(
    out: Path,
    enc: VisionEncoder,
    layers: list[int],
    fusion: TapFusion,
    params: Params,
    norm: dict[str, NormStats],
) -> EncoderInfo:
    """Write ``encoder.safetensors`` + ``encoder.json`` (what the detector loads as its backbone,
    whatever the pretraining objective); return the description."""
    cfg = params.pretrain
    weights = out / "encoder.safetensors"
    save_safetensors(enc.state_dict(), weights)
    taps = [enc.tap_info(k) for k in layers]
    info: EncoderInfo = {
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
        "normalization": norm,
        "lvsa": {
            "mode": cfg.lvsa.mode,
            "layers": list(layers),
            "tau": cfg.lvsa.tau,
            "grid": fusion.grid,
            "width": fusion.width,
        },
        "objective": cfg.objective,
        "language_model": cfg.language_model if cfg.objective == "language" else None,
        "steps": cfg.steps,
    }
    write_json(out / "encoder.json", info)
    return info


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
    export_encoder(out, model.encoder, model.layers, model.fusion, params, data.norm)
    save_safetensors(
        {
            **{f"fusion.{k}": v for k, v in model.fusion.state_dict().items()},
            **{f"projector.{k}": v for k, v in model.projector.state_dict().items()},
        },
        out / "projector.safetensors",
    )
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
        "data": data.counts(),
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
