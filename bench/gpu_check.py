"""GPU check: CUDA, AMP and throughput of the training stages on a CUDA machine (< 8 minutes).

Runs SOI-mini generation + import, then a few hundred pretraining steps in fp32 / bf16 / fp16 on
CUDA (samples/s, peak memory, non-finite steps), a ViT-L (InternViT-300M layout) encoder
forward+backward throughput in bf16 / fp16 at 448 px, and the detector stage when the OpenMMLab
stack with CUDA ops is installed. Prints one table; writes JSON to ``$OUT/gpu_check.json``.

    bash bench/gpu_check.sh            # on the GPU machine, from the repo root
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from babelrs_core import stages  # noqa: E402
from babelrs_core.config import load_params  # noqa: E402

#: ``GPU_CHECK_DEVICE=cpu`` dry-runs the stage calls on the CPU (checks the script, no figures).
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")


def _peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE == "cuda" else 0.0


def _reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def device_info() -> dict[str, Any]:
    p = torch.cuda.get_device_properties(0)
    return {
        "gpu": p.name,
        "memory_gib": round(p.total_memory / 2**30, 1),
        "sms": p.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def matmul_tflops(dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def base_overrides(work: Path, lm: str) -> dict[str, Any]:
    """The params overrides every run of the check shares: SOI-mini under ``work``, the language
    model ``lm``; on a CPU dry run a few images per split only."""
    base: dict[str, Any] = {
        "paths.raw": str(work / "raw"),
        "paths.manifest": str(work / "manifest.parquet"),
        "pretrain.language_model": lm,
    }
    if DEVICE != "cuda":  # dry run: a few images only
        for ds, splits in (("sardet", ("train", "val")), ("dota", ("train", "val"))):
            base[f"soi_mini.{ds}.splits"] = dict.fromkeys(splits, 4)
        base["soi_mini.dronevehicle.splits"] = {"train": 4, "val": 4, "test": 4}
    return base


def pretrain_run(base: dict[str, Any], precision: str, steps: int, work: Path) -> dict[str, Any]:
    params = load_params(
        ROOT / "params.yaml",
        {
            **base,
            "pretrain.device": DEVICE,
            "pretrain.precision": precision,
            "pretrain.steps": steps,
            "pretrain.checkpoint_every": steps,
            "pretrain.eval_max_per_task": 20,
        },
    )
    _reset_peak()
    out = work / f"pretrain_{precision}"
    t = time.perf_counter()
    summary = stages.pretrain(params, out=out, resume=False)
    wall = time.perf_counter() - t
    train_s = float(summary.get("train_s", wall))
    return {
        "stage": "pretrain",
        "precision": precision,
        "steps": steps,
        "samples_per_s": round(steps * params.pretrain.batch_size / max(train_s, 1e-9), 1),
        "peak_mem_gib": _peak_gib(),
        "nonfinite_steps": summary.get("nonfinite_steps"),
        "final_loss": summary.get("final_loss", summary.get("loss")),
        "wall_s": round(wall, 1),
    }


def vit_large_throughput(precision: str, batch: int = 8, size: int = 448, iters: int = 20) -> dict:
    from babelrs_core.models.encoders import build_encoder

    enc = build_encoder("vit_large", pretrained=False).cuda().train()
    layers = enc.resolve_layers(None)
    x = torch.randn(batch, 3, size, size, device="cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-5)
    torch.cuda.reset_peak_memory_stats()
    nonfinite = 0

    def step() -> None:
        nonlocal nonfinite
        with torch.autocast("cuda", dtype=dtype):
            loss = sum(f.float().pow(2).mean() for f in enc.forward_taps(x, layers))
        if not torch.isfinite(loss):
            nonfinite += 1
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return {
        "stage": "vit_large encoder fwd+bwd",
        "precision": precision,
        "steps": iters,
        "samples_per_s": round(batch * iters / (time.perf_counter() - t), 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "nonfinite_steps": nonfinite,
        "params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 1),
    }


def detector_run(base: dict[str, Any], precision: str, iters: int, work: Path) -> dict[str, Any]:
    try:
        import mmcv.ops  # noqa: F401
        import mmdet  # noqa: F401
    except Exception as exc:  # the OpenMMLab stack is not on this machine
        return {
            "stage": "finetune",
            "precision": precision,
            "skipped": f"{type(exc).__name__}: {exc}",
        }
    params = load_params(
        ROOT / "params.yaml",
        {**base, "finetune.device": DEVICE, "finetune.precision": precision,
         "finetune.init": "imagenet", "finetune.iters": iters},
    )  # fmt: skip
    _reset_peak()
    t = time.perf_counter()
    summary = stages.finetune(params, out=work / f"finetune_{precision}", resume=False)
    wall = time.perf_counter() - t
    return {
        "stage": "finetune",
        "precision": precision,
        "steps": iters,
        "iters_per_s": round(iters / wall, 2),
        "peak_mem_gib": _peak_gib(),
        "nonfinite_steps": summary.get("nonfinite_steps"),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible")
    t0 = time.perf_counter()
    steps = int(os.environ.get("GPU_CHECK_STEPS", "300"))
    lm = os.environ.get("GPU_CHECK_LM", "minilm")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    base = base_overrides(work, lm)
    info = device_info() if DEVICE == "cuda" else {"gpu": "cpu dry run"}
    print(json.dumps(info))
    rows: list[dict[str, Any]] = []
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)) if DEVICE == "cuda" else ():
        row = {"stage": "matmul 8192^3", "precision": name, "tflops": round(matmul_tflops(dt))}
        rows.append(row)
    params = load_params(ROOT / "params.yaml", base)
    stages.generate(params, progress=False)
    stages.import_data(params, progress=False)
    precisions = os.environ.get("GPU_CHECK_PRECISIONS", "fp32,bf16,fp16").split(",")
    for precision in precisions:
        rows.append(pretrain_run(base, precision, steps, work))
        print(json.dumps(rows[-1]), flush=True)
    for precision in ("bf16", "fp16") if DEVICE == "cuda" else ():
        rows.append(vit_large_throughput(precision))
        print(json.dumps(rows[-1]), flush=True)
    for precision in [p for p in precisions if p != "fp32"] or ["fp32"]:
        rows.append(detector_run(base, precision, steps, work))
        print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t0
    print(f"\n{'stage':<28}{'prec':<6}{'throughput':>16}{'peak GiB':>10}{'non-finite':>12}")
    for r in rows:
        thr = r.get("samples_per_s") or r.get("iters_per_s") or r.get("tflops")
        unit = "samples/s" if "samples_per_s" in r else "it/s" if "iters_per_s" in r else "TFLOP/s"
        shown = f"{thr} {unit}" if thr is not None else r.get("skipped", "")[:40]
        print(f"{r['stage']:<28}{r['precision']:<6}{shown:>16}{r.get('peak_mem_gib', ''):>10}"
              f"{r.get('nonfinite_steps', '')!s:>12}")  # fmt: skip
    print(f"total {total:.0f} s on {info['gpu']}")
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(json.dumps({"device": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
