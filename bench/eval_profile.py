"""Where the evaluation stage's time goes, for one fine-tuned detector (1 torch thread).

    .venv/bin/python bench/eval_profile.py
        [--checkpoint outputs/ablation/runs/ours/fp32/seed0/finetune]
        [--manifest outputs/ablation/data/manifest.parquet] [--out /tmp/babelrs-eval-profile]

Runs :func:`babelrs_core.evaluation.report.run_evaluation` under ``cProfile`` and prints the
wall seconds in all and the cumulative seconds of its parts: loading the checkpoint, predicting,
scoring, the orientation matching, the files and the PNGs (docs/ablation.md "Budget").
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import torch

from babelrs_core.config import load_params
from babelrs_core.evaluation.report import run_evaluation

PARTS = {
    "from_checkpoint": "load the checkpoint",
    "predict_batch": "predict",
    "score_split": "score (COCO / rotated AP)",
    "match_objects": "orientation matching",
    "_write_predictions": "write predictions",
    "write_outputs": "write tables",
    "plot_orientation": "orientation PNG",
    "save_png": "sample PNGs",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="outputs/ablation/runs/ours/fp32/seed0/finetune")
    ap.add_argument("--manifest", default="outputs/ablation/data/manifest.parquet")
    ap.add_argument("--out", default="/tmp/babelrs-eval-profile")
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = load_params(Path("params.yaml"))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    run_evaluation(params, args.manifest, args.checkpoint, args.out)
    profile.disable()
    total = time.perf_counter() - start
    cumulative: dict[str, float] = dict.fromkeys(PARTS, 0.0)
    for (_, _, name), row in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if name in cumulative:
            cumulative[name] += row[3]
    print(f"evaluation of {args.checkpoint}: {total:.1f} s in all")
    for name, label in PARTS.items():
        print(f"  {label:<28} {cumulative[name]:6.1f} s  ({cumulative[name] / total:5.1%})")


if __name__ == "__main__":
    main()
