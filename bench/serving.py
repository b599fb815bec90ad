"""Serving overhead: the registered pyfunc model's predict latency against the raw detector forward
(``Detector.predict_batch``) on the same images, in one run; prints a ratio table.

    .venv/bin/python bench/serving.py --checkpoint outputs/finetune --write-docs docs/benchmarks.md

The pyfunc model is logged to a throw-away local MLflow store and loaded back with
``mlflow.pyfunc.load_model`` (what a consumer of ``models:/<name>@champion`` runs); its input is
PNG bytes in a DataFrame, so its time includes decoding and building the output table. Without
``--checkpoint`` (or when it does not exist) a detector of the configured size is made by one
fine-tuning iteration from scratch: latency does not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from babelrs_core.config import load_params  # noqa: E402
from babelrs_core.io.markdown import table_head  # noqa: E402

SECTION = "## Serving (pyfunc vs raw forward)"


def eval_images(params, manifest: Path, per_modality: int) -> dict[str, list[np.ndarray]]:
    """Up to ``per_modality`` images of each dataset's evaluation split, keyed by modality."""
    from babelrs_core.concepts import DATASETS
    from babelrs_core.data.image_source import ImageRef, open_source
    from babelrs_core.data.manifest import read_manifest
    from babelrs_core.detector.data import image_items

    frame = read_manifest(manifest)
    out: dict[str, list[np.ndarray]] = {}
    for ds, split in params.evaluation.splits.items():
        items = image_items(frame, ds, split)[:per_modality]
        arrays = [open_source(params).load(ImageRef.of_item(it)) for it in items]
        if arrays:
            out[DATASETS[ds].modality] = arrays
    return out


def scratch_detector(params_path: str | Path, manifest: Path, out: Path) -> Path:
    """A detector of the configured size made by one fine-tuning iteration from scratch on
    ``manifest``, exported to ``out`` (latency does not depend on what the weights learned)."""
    from babelrs_core.detector.train import run_finetune

    one = load_params(params_path, {"finetune.init": "scratch", "finetune.iters": 1,
                                    "finetune.warmup_iters": 1,
                                    "finetune.val_every": 0})  # fmt: skip
    run_finetune(one, manifest, out=out, resume=False)
    return out


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median and min seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--manifest", default=None, help="images from its evaluation splits")
    ap.add_argument("--checkpoint", default=None, help="exported detector folder")
    ap.add_argument("--per-modality", type=int, default=4, help="images per modality")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--write-docs", default=None, help=f"update this file's '{SECTION}'")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import mlflow

    from babelrs_core.detector.inference import Detector
    from babelrs_core.registry.payload import input_frame
    from babelrs_core.registry.pyfunc import log_detector_model

    params = load_params(args.params)
    manifest = Path(args.manifest or params.paths.manifest)
    images = eval_images(params, manifest, args.per_modality)
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint or params.paths.finetune_out)
        made = not (ckpt / "detector.json").exists()
        if made:
            ckpt = scratch_detector(args.params, manifest, tmp / "detector")
        mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        exp = mlflow.create_experiment("bench", artifact_location=(tmp / "art").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_detector_model(ckpt)
        model = mlflow.pyfunc.load_model(info.model_uri)
        det = Detector.from_checkpoint(ckpt)
        rows = []
        for modality, arrays in images.items():
            frame = input_frame(arrays, modality)
            raw = timed(lambda a=arrays, m=modality: det.predict_batch(a, m), args.repeats)
            pyf = timed(lambda f=frame: model.predict(f), args.repeats)
            shape = "x".join(map(str, arrays[0].shape[1::-1]))
            rows.append((modality, len(arrays), shape, raw, pyf))
    lines = [
        f"Detector {'made by 1 scratch iteration' if made else str(args.checkpoint)}, "
        f"{args.per_modality} images per modality (one batch), median of {args.repeats} calls "
        f"(min in brackets), torch threads {torch.get_num_threads()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "",
        *table_head(
            ["modality", "images", "size", "raw forward s", "pyfunc predict s", "pyfunc / raw"],
            "lrlr",
        ),
    ]
    for modality, n, shape, raw, pyf in rows:
        lines.append(f"| {modality} | {n} | {shape} | {raw[0]:.3f} ({raw[1]:.3f}) | "
                     f"{pyf[0]:.3f} ({pyf[1]:.3f}) | {pyf[0] / raw[0]:.2f} |")  # fmt: skip
    table = "\n".join(lines)
    print("\n" + table)
    if args.write_docs:
        from babelrs_core.io.results_md import update_results_md

        argv = " ".join(sys.argv[1:])
        section = "\n".join([
            SECTION,
            "",
            "Latency of the registered pyfunc model (`mlflow.pyfunc.load_model(...).predict` on a",
            "DataFrame of PNG bytes: decode, schema check, one forward per modality, output",
            "table) against the raw forward `Detector.predict_batch` on the same decoded images,",
            "in one run. ratio = pyfunc / raw (1.00: no overhead).",
            "",
            "```",
            f".venv/bin/python bench/serving.py {argv}".rstrip(),
            "```",
            "",
            table,
            "",
            "Single run on a 2-core machine shared with other jobs (run under `nice`): read",
            "ratios within ~10 %. REST serving (`mlflow models serve`) adds JSON / base64 and HTTP",
            "on top of the pyfunc figure.",
            "",
        ])  # fmt: skip
        update_results_md(args.write_docs, section, SECTION, title="# Benchmarks")


if __name__ == "__main__":
    main()
