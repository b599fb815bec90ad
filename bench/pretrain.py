"""Benchmark one pretraining configuration: training samples/s and peak memory.

Usage (from the repository root, after ``babelrs data generate && babelrs data import``)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretrain.py [--params params.yaml] [--steps 20]
        [--warmup 3] [--set pretrain.batch_size=16 ...]

Times ``--steps`` optimizer steps (after ``--warmup`` untimed ones) of the exact training step of
``babelrs_core.pretrain.train`` (forward, response-token loss, backward, clipping, AdamW) and one
held-out decoding batch, and prints them with the peak resident memory (and peak CUDA memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from babelrs_core.settings_env import offline_by_default

offline_by_default()

import torch  # noqa: E402
import yaml  # noqa: E402

from babelrs_core.config import load_params  # noqa: E402
from babelrs_core.pretrain.evaluate import EVAL_BATCH, predict  # noqa: E402
from babelrs_core.pretrain.train import (  # noqa: E402
    autocast_for,
    param_groups,
    prepare,
    resolve_device,
    trainable_summary,
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="override KEY=VALUE")
    a = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in a.set)}
    params = load_params(a.params, overrides)
    cfg = params.pretrain
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    t = time.perf_counter()
    model, data = prepare(params, params.paths.manifest)
    build_s = time.perf_counter() - t
    model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, params), foreach=True)
    trainable = [p for g in opt.param_groups for p in g["params"]]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(i: int) -> None:
        idx, flips, drops = data.draw(i, cfg.batch_size, params.seed)
        b = data.collate([data.train[j] for j in idx], flips=flips, drops=drops)
        for name in (
            "images", "text_ids", "text_mask", "labels", "region_at", "boxes", "drop_prefix",
            "drop_roi",
        ):  # fmt: skip
            setattr(b, name, getattr(b, name).to(device))
        with autocast_for(cfg.precision, device):
            losses, _ = model.token_losses(b, i)
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(a.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(a.warmup, a.warmup + a.steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t
    items = data.heldout[:EVAL_BATCH]
    t = time.perf_counter()
    predict(model, data, items, params, device)
    eval_s = time.perf_counter() - t
    result = {
        "encoder": params.model.encoder,
        "language_model": cfg.language_model,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "precision": cfg.precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "build_s": round(build_s, 2),
        "train_samples_per_s": round(cfg.batch_size * a.steps / train_s, 2),
        "train_s_per_step": round(train_s / a.steps, 3),
        "eval_prompts_per_s": round(len(items) / eval_s, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if device.type == "cuda"
        else None,
        **trainable_summary(model),
    }
    print(json.dumps(result, indent=2))
    print(
        f"pretraining: {result['train_samples_per_s']} samples/s "
        f"({result['train_s_per_step']} s/step, batch {cfg.batch_size}), "
        f"eval {result['eval_prompts_per_s']} prompts/s, peak RSS {result['peak_rss_mib']} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
