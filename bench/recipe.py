"""What holds the detector back: fine-tune + evaluate named recipe variants, one table.

    .venv/bin/python bench/recipe.py base ratio111 ... [--set key=value ...] [--out outputs/recipe]
    .venv/bin/python bench/recipe.py --list

Each variant is a set of params overrides on top of ``params.yaml`` (plus any ``--set``); every
variant fine-tunes from the same pretraining output (``paths.pretrain_out``) on the same manifest,
one after the other in this process, then runs the evaluation stage. The table has, per variant:
iterations, s/iter, fine-tuning seconds, rotated AP@50 / mAP per dataset, H-mAP, and the
orientation diagnostics of the oriented heads (median predicted vs true aspect, median long-axis
error). ``docs/detector.md`` ("What held the default back") reads these runs. Results are also
written to ``<out>/<variant>/recipe.json``; a variant whose ``recipe.json`` exists is not rerun
(``--force`` reruns it).
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

from babelrs_core.concepts import DATASETS, MODALITIES  # noqa: E402
from babelrs_core.config import load_params  # noqa: E402
from babelrs_core.io.markdown import table_head  # noqa: E402

#: variant -> (what it changes, overrides). ``base`` is params.yaml as it is.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("params.yaml as it is", {}),
    "noaug": (
        "no flips / quarter turns",
        {
            f"finetune.modalities.{m}.{k}": 0.0
            for m in MODALITIES
            for k in ("hflip", "vflip", "rot90")
        },
    ),
    "ratio111": (
        "1:1:1 batches of 3",
        {
            "finetune.source_ratio.sardet": 1,
            "finetune.source_ratio.dota": 1,
            "finetune.source_ratio.dronevehicle": 1,
            "finetune.batch_size": 3,
        },
    ),
    "lr2x": ("lr 2e-3", {"finetune.lr": 2.0e-3}),
    "enc1x": ("encoder lr x 1.0", {"finetune.encoder_lr_scale": 1.0}),
    "nocos": ("no gradient cosines", {"finetune.grad_cosine_every": 0}),
    "anchor2": (
        "anchor scale 2 on the oriented heads",
        {"finetune.heads.dota.anchor_scale": 2, "finetune.heads.dronevehicle.anchor_scale": 2},
    ),
    "ir640": ("IR trained at 640 px", {"finetune.modalities.ir.image_size": 640}),
    "ir512": ("IR trained at 512 px", {"finetune.modalities.ir.image_size": 512}),
    "r112": (
        "1:1:2 batches of 4 (two IR images)",
        {
            "finetune.source_ratio.sardet": 1,
            "finetune.source_ratio.dota": 1,
            "finetune.source_ratio.dronevehicle": 2,
        },
    ),
    "cosine": ("cosine lr after the warmup", {"finetune.lr_schedule": "cosine"}),
    "early_steps": ("step decay at 0.5 / 0.85 of iters", {"finetune.lr_steps": [0.5, 0.85]}),
    "crop320": (
        "IR trained on random 320 x 320 crops of the 640 x 512 frame (same object scale)",
        {"finetune.modalities.ir.crop": 320},
    ),
    "crop256": (
        "IR trained on random 256 x 256 crops of the 640 x 512 frame (same object scale)",
        {"finetune.modalities.ir.crop": 256},
    ),
    "nms300": (
        "oriented heads keep 300 candidates per level before NMS",
        {"finetune.heads.dota.nms_pre": 300, "finetune.heads.dronevehicle.nms_pre": 300},
    ),
    "rkld": (
        "oriented box loss KL(pred || target)",
        {"finetune.heads.dota.box_loss": "rkld", "finetune.heads.dronevehicle.box_loss": "rkld"},
    ),
    "mrl1": (
        "oriented box loss: modulated L1 on target-normalised offsets",
        {"finetune.heads.dota.box_loss": "mrl1", "finetune.heads.dronevehicle.box_loss": "mrl1"},
    ),
    "gwd": (
        "oriented box loss GWD",
        {"finetune.heads.dota.box_loss": "gwd", "finetune.heads.dronevehicle.box_loss": "gwd"},
    ),
}


def _oriented(eval_out: Path) -> dict[str, Any]:
    path = eval_out / "orientation.json"
    if not path.exists():
        return {}
    return {ds: o["summary"] for ds, o in json.loads(path.read_text()).items()}


def run_variant(name: str, overrides: dict[str, Any], out_root: Path, force: bool) -> dict:
    from babelrs_core.detector.train import run_finetune
    from babelrs_core.evaluation.report import run_evaluation

    out = out_root / name
    done = out / "recipe.json"
    if done.exists() and not force:
        return json.loads(done.read_text())
    params = load_params(
        ROOT / "params.yaml",
        {
            **overrides,
            "paths.finetune_out": str(out / "finetune"),
            "paths.eval_out": str(out / "eval"),
        },
    )
    fresh = not (out / "finetune" / "train.json").exists() or force
    t0 = time.perf_counter()
    train = run_finetune(params, resume=not fresh)  # a finished run only re-exports
    train_s = time.perf_counter() - t0 if fresh else train["timing"]["train_s"]
    ev = run_evaluation(params)
    row = {
        "variant": name,
        "overrides": overrides,
        "iters": params.finetune.iters,
        "s_per_iter": round(train_s / params.finetune.iters, 3),
        "finetune_s": round(train_s, 1),
        "eval_s": ev["info"]["eval_s"],
        "datasets": {k: v for k, v in ev.items() if k in DATASETS},
        "overall": ev["overall"],
        "orientation": _oriented(out / "eval"),
        "final_loss": train.get("final_loss"),
        "train_s_per_iter": round(train_s / params.finetune.iters, 3),
    }
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row, indent=1, default=float))
    return row


def table(rows: list[dict]) -> str:
    head = ["variant", "iters", "s/iter", "SAR AP50/mAP", "DOTA AP50/mAP", "DV AP50/mAP"]
    head += ["H-mAP", "DOTA aspect pred/true, axis err", "DV aspect pred/true, axis err"]
    lines = table_head(head)
    for r in rows:
        d = r["datasets"]

        def s(ds: str, d: dict = d) -> str:
            return f"{d[ds]['ap50']:.1f} / {d[ds]['map']:.1f}" if ds in d else "-"

        def o(ds: str, r: dict = r) -> str:
            x = r["orientation"].get(ds)
            if not x or x.get("median_pred_aspect") is None:
                return "-"
            return (
                f"{x['median_pred_aspect']:.1f}/{x['median_gt_aspect']:.1f}, "
                f"{x['median_axis_error_deg']:.0f}°"
            )

        lines.append(
            f"| {r['variant']} | {r['iters']} | {r['s_per_iter']:.2f} | {s('sardet')} | "
            f"{s('dota')} | {s('dronevehicle')} | {r['overall']['hmap']:.1f} | {o('dota')} | "
            f"{o('dronevehicle')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", default=["base"])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "recipe")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for k, (what, ov) in VARIANTS.items():
            print(f"{k:10s} {what}: {ov}")
        return
    import yaml

    common = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    rows = []
    for spec in args.variants:
        # "a+b" combines variants; later ones win
        overrides: dict[str, Any] = dict(common)
        for part in spec.split("+"):
            if part not in VARIANTS:
                sys.exit(f"unknown variant {part!r}; --list shows them")
            overrides.update(VARIANTS[part][1])
        rows.append(run_variant(spec, overrides, args.out, args.force))
        print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
