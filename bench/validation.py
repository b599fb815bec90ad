"""Benchmark the manifest validation rules: Great Expectations vs plain vectorised pandas.

Usage (from the repository root)::

    .venv/bin/python bench/validation.py [--rows 1000000] [--defects 0.001] [--repeat 1]

Builds a synthetic manifest of ``--rows`` object rows (SOI-Det datasets, splits and label spaces,
five objects per image, boxes and oriented polygons inside 800x800 images) with a fraction
``--defects`` of broken rows (boxes outside the image, unknown classes, bad modalities, zero-area
polygons, duplicated rows), derives the rule columns once (:func:`prepare_manifest`, timed
separately: both engines read them), then evaluates the *same* rule set
(:func:`manifest_rules`) with GX (the stage's engine: ephemeral context, pandas data source,
whole-dataframe batch, one ValidationDefinition, no Data Docs) and with the pandas reference, and
prints rows/s for each side by side with their ratio. The image checks are not part of this:
they decode files and are bound by I/O and decoding, not by the rule engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from babelrs_core.concepts import DATASET_MODALITIES, DATASETS, SOI_DET_CLASSES, SPLITS
from babelrs_core.data.validation.rules import (
    manifest_rules,
    prepare_manifest,
    run_pandas,
)


def synthetic_manifest(rows: int, defects: float = 0.001, seed: int = 0) -> pd.DataFrame:
    """A manifest-shaped frame (absolute-looking paths, no files behind them)."""
    rng = np.random.default_rng(seed)
    per_image = 5
    n_images = max(1, rows // per_image)
    names = list(DATASETS)
    ds = rng.choice(names, n_images)
    split = rng.choice(list(SPLITS), n_images, p=[0.7, 0.15, 0.15])
    image_id = np.char.add(
        np.char.add(np.char.add(ds, "/"), np.char.add(split, "/")),
        (np.char.zfill(np.arange(n_images).astype(str), 7)),
    )
    img = np.repeat(np.arange(n_images), per_image)[:rows]
    obj = np.tile(np.arange(per_image), n_images)[:rows]
    d = ds[img]
    modality = pd.Series(d).map({k: v[0] for k, v in DATASET_MODALITIES.items()}).to_numpy()
    classes = np.empty(rows, dtype=object)
    for name in names:
        sel = d == name
        classes[sel] = rng.choice(DATASETS[name].class_names, sel.sum())
    soi = {c: i for i, c in enumerate(SOI_DET_CLASSES)}
    label_of = {(n, c.name): soi[c.soi_name] for n in names for c in DATASETS[n].classes}
    labels = np.array([label_of[k] for k in zip(d, classes, strict=True)], dtype=np.int32)
    w = h = 800
    x1 = rng.uniform(0, 700, rows)
    y1 = rng.uniform(0, 700, rows)
    x2 = x1 + rng.uniform(5, 100, rows)
    y2 = y1 + rng.uniform(5, 100, rows)
    poly = np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1)
    frame = pd.DataFrame(
        {
            "image_id": image_id[img],
            "dataset": d,
            "modality": modality,
            "split": split[img],
            "path": np.char.add("/data/raw/", np.char.add(image_id[img], ".png")),
            "width": np.int32(w),
            "height": np.int32(h),
            "crop_x": np.int32(0),
            "crop_y": np.int32(0),
            "object_index": obj.astype(np.int32),
            "class_name": classes,
            "raw_class": classes,
            "label": labels,
            "x1": x1,
            "y1": y1,
            "x2": x2,
            "y2": y2,
            "poly": list(poly),
            "difficult": False,
            "source_file": np.char.add(image_id[img], ".txt"),
            "source_line": (obj + 1).astype(np.int32),
        }
    )
    k = int(rows * defects)
    if k:
        bad = rng.choice(rows, 5 * k, replace=False).reshape(5, k)
        frame.loc[bad[0], "x2"] = w + 10.0
        frame.loc[bad[1], "class_name"] = "not-a-class"
        frame.loc[bad[2], "modality"] = "optical"
        frame.loc[bad[3], "poly"] = pd.Series([np.zeros(8)] * k, index=bad[3])
        frame = pd.concat([frame, frame.iloc[bad[4]]], ignore_index=True)
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--defects", type=float, default=0.001, help="fraction of broken rows")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per engine (best kept)")
    args = ap.parse_args()

    t = time.perf_counter()
    import great_expectations  # import cost is reported apart

    gx_import = time.perf_counter() - t
    from babelrs_core.data.validation.suites import run_gx

    t = time.perf_counter()
    frame = synthetic_manifest(args.rows, args.defects)
    build = time.perf_counter() - t
    t = time.perf_counter()
    prepared = prepare_manifest(frame)
    prep = time.perf_counter() - t
    rules = manifest_rules(prepared, ("train", "val"), None)
    n = len(prepared)

    def best(fn) -> tuple[float, list]:
        times, out = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    gx_s, gx_out = best(lambda: run_gx({"manifest": (prepared, rules)}, 20, None))
    pd_s, pd_out = best(lambda: run_pandas(rules, prepared, 20))
    gx_fail = {o.rule.id: o.count for o in gx_out if not o.success}
    pd_fail = {o.rule.id: o.count for o in pd_out if not o.success}

    print(f"manifest: {n:,} rows ({args.defects:.2%} defects), {len(rules)} rules")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, pandas {pd.__version__}, "
        f"great_expectations {great_expectations.__version__}"
    )
    print(f"build synthetic manifest {build:7.2f} s")
    print(f"import great_expectations {gx_import:6.2f} s (once per process, not counted)")
    print(f"derive rule columns      {prep:7.2f} s  {n / prep:>12,.0f} rows/s (shared by both)")
    print(f"{'engine':<24}{'seconds':>8}{'rows/s':>14}")
    print(f"{'great_expectations':<24}{gx_s:8.2f}{n / gx_s:>14,.0f}")
    print(f"{'pandas (vectorised)':<24}{pd_s:8.2f}{n / pd_s:>14,.0f}")
    print(f"ratio GX / pandas time: {gx_s / pd_s:.1f}x")
    print(f"failed rules agree: {gx_fail == pd_fail} ({len(gx_fail)} failed: {sorted(gx_fail)})")


if __name__ == "__main__":
    main()
