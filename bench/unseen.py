"""The shipped detector on SOI-mini it never saw: another seed, harsher sensors, one table.

    .venv/bin/python bench/unseen.py [--seed 1] [--mild] [--checkpoint outputs/finetune]
                                     [--out outputs/unseen] [--set key=value ...]

Renders a second SOI-mini with another ``seed`` (new scenes, objects and sensor draws) and, unless
``--mild``, harsher sensor settings (``HARSH``: more speckle and noise in SAR, hotter noise, more
blur and lower contrast in IR, haze, blur and JPEG in RGB), imports it with the real-format
importers, and scores the fine-tuned detector in ``--checkpoint`` (default
``paths.finetune_out``: what ``make run`` trained) on its evaluation splits with the evaluation
stage. Prints the per-dataset mAP and H-mAP of the default evaluation (``paths.eval_out``, when it
exists) beside the unseen one and their ratio. The unseen H-mAP should stay within 20 % of the
default's (latest figures: docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from babelrs_core.concepts import DATASETS  # noqa: E402
from babelrs_core.config import load_params  # noqa: E402
from babelrs_core.io.markdown import table_head, table_row  # noqa: E402

#: harsher sensors than params.yaml's soi_mini (each still inside the real sensors' range)
HARSH: dict[str, Any] = {
    "soi_mini.sar.looks": [1, 2, 3],  # more speckle (fewer looks)
    "soi_mini.sar.nesz_db": {"lo": -22, "hi": -18},  # noisier floor
    "soi_mini.sar.psf_sigma_px": {"lo": 0.8, "hi": 1.4},
    "soi_mini.ir.netd_k": {"lo": 0.06, "hi": 0.12},
    "soi_mini.ir.blur_sigma_px": {"lo": 1.2, "hi": 2.0},
    "soi_mini.ir.min_contrast_k": 3.0,
    "soi_mini.ir.night_fraction": 0.6,
    "soi_mini.rgb.haze": {"lo": 0.05, "hi": 0.3},
    "soi_mini.rgb.blur_sigma_px": {"lo": 0.8, "hi": 1.5},
    "soi_mini.rgb.jpeg_quality": {"lo": 55, "hi": 85},
}


def _scores(eval_json: Path) -> dict[str, float] | None:
    if not eval_json.exists():
        return None
    e = json.loads(eval_json.read_text())
    return {**{d: e[d]["map"] for d in DATASETS if d in e}, "hmap": e["overall"]["hmap"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mild", action="store_true", help="the default sensors, only a new seed")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("outputs/unseen"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    import yaml

    from babelrs_core import stages

    over: dict[str, Any] = {} if args.mild else dict(HARSH)
    over.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    over |= {"seed": args.seed, "paths.raw": str(args.out / "raw"),
             "paths.manifest": str(args.out / "manifest.parquet")}  # fmt: skip
    params = load_params(ROOT / "params.yaml", over)
    t0 = time.perf_counter()
    stages.generate(params, progress=False)
    stages.import_data(params, progress=False)
    gen_s = time.perf_counter() - t0
    result = stages.evaluate(params, checkpoint=args.checkpoint, out=args.out / "eval")
    unseen = _scores(args.out / "eval" / "metrics" / "eval.json")
    base = _scores(params.paths.eval_out / "metrics" / "eval.json")
    assert unseen is not None, "the evaluation stage wrote no metrics"
    kind = "default sensors" if args.mild else "harsher sensors (bench/unseen.py HARSH)"
    print(f"\nSOI-mini seed {args.seed}, {kind}: rendered + imported in {gen_s:.0f} s; "
          f"detector {result['info']['checkpoint']}")  # fmt: skip
    cols = [*[d for d in DATASETS if d in unseen], "hmap"]
    names = [f"{c} mAP" if c != "hmap" else "H-mAP" for c in cols]
    print("\n".join(table_head(["evaluation data", *names])))
    rows = [("default SOI-mini (paths.eval_out)", base), (f"seed {args.seed}, {kind}", unseen)]
    for label, s in rows:
        if s is not None:
            print(table_row([label, *(f"{s[c]:.1f}" for c in cols)]))
    if base is not None:
        ratios = [f"{unseen[c] / base[c]:.2f}" if base[c] else "–" for c in cols]
        print(table_row(["unseen / default", *ratios]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
