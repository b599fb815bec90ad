"""The generated "Detector fine-tuning" section of ``docs/results.md``: evaluation runs side by
side with the paper's row, and the settings they ran with."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babelrs_core.concepts import DATASETS, MODALITIES
from babelrs_core.io.markdown import table_head, table_row

SECTION = "## Detector fine-tuning"
PAPER_ROW: dict[str, Any] = {
    "label": "paper: BabelRS, ViT-L, SOI-Det (Table 2)",
    "sardet": (91.70, 63.30),
    "dota": (77.73, 46.96),
    "dronevehicle": (79.63, 51.32),
    "overall": (81.32, 51.57),
    "hmap": 53.02,
}
SHORT = {"sardet": "SAR", "dota": "DOTA", "dronevehicle": "DroneVehicle"}


def results_table(rows: Sequence[dict[str, Any]], with_paper: bool = True) -> str:
    """Markdown table: per dataset AP@50 / mAP, overall AP@50 / mAP, H-mAP; one row per run.

    Each row: ``{"label": str, "eval": <metrics/eval.json content>}``.
    """
    dss = [d for d in DATASETS if any(d in r["eval"] for r in rows)] or list(DATASETS)
    head = ["run"]
    for d in dss:
        head += [f"{SHORT[d]} AP@50", f"{SHORT[d]} mAP"]
    head += ["Overall AP@50", "Overall mAP", "H-mAP"]
    lines = table_head(head, "lr")
    for r in rows:
        e = r["eval"]
        rotated = [SHORT[d] for d in dss if "hbox_map" in e.get(d, {})]
        label = r["label"] + (f" ({' / '.join(rotated)} rotated)" if rotated else "")
        cells = [label]
        for d in dss:
            cells += [f"{e[d]['ap50']:.2f}", f"{e[d]['map']:.2f}"] if d in e else ["–", "–"]
        o = e["overall"]
        cells += [f"{o['ap50']:.2f}", f"{o['map']:.2f}", f"**{o['hmap']:.2f}**"]
        lines.append(table_row(cells))
        if "hbox_hmap" in o:  # the same run scored with horizontal boxes everywhere
            cells = [f"{r['label']} (all horizontal)"]
            for d in dss:
                if d not in e:
                    cells += ["–", "–"]
                    continue
                ap50, m = e[d].get("hbox_ap50", e[d]["ap50"]), e[d].get("hbox_map", e[d]["map"])
                cells += [f"{ap50:.2f}", f"{m:.2f}"]
            cells += [f"{o['hbox_ap50']:.2f}", f"{o['hbox_map']:.2f}", f"{o['hbox_hmap']:.2f}"]
            lines.append(table_row(cells))
    if with_paper:
        cells = [PAPER_ROW["label"]]
        for d in dss:
            cells += [f"{PAPER_ROW[d][0]:.2f}", f"{PAPER_ROW[d][1]:.2f}"]
        cells += [
            f"{PAPER_ROW['overall'][0]:.2f}",
            f"{PAPER_ROW['overall'][1]:.2f}",
            f"{PAPER_ROW['hmap']:.2f}",
        ]
        lines.append(table_row(cells))
    return "\n".join(lines)


def _ordered(d: dict[str, Any], order: Sequence[str]) -> list[tuple[str, Any]]:
    return [(k, d[k]) for k in order if k in d] + [(k, v) for k, v in d.items() if k not in order]


def _pretraining(t: dict[str, Any], i: dict[str, Any], det: dict[str, Any]) -> str:
    pre = det.get("pretrain") or {}
    if det.get("init") != "csia" or not pre.get("steps"):
        return "–"
    lvsa = pre.get("lvsa") or {}
    return f"{pre['steps']} steps, LVSA mode {lvsa.get('mode', '?')}, taps {lvsa.get('layers')}"


def _train_time(t: dict[str, Any]) -> str:
    tm = t["timing"]
    cpu = f", {t['cpu_s_per_iter']:.2f} CPU s/iter" if t.get("cpu_s_per_iter") else ""
    span = ""
    if t.get("resumed_from"):
        span = f" for iterations {t['resumed_from'] + 1}–{t['iters']} (resumed run)"
    return f"{tm['train_s']:.0f} s{span} ({tm['s_per_iter']:.2f} s/iter wall{cpu})"


def settings_table(rows: Sequence[dict[str, Any]]) -> str:
    """Run settings side by side (from ``train.json``, ``eval_info.json``, ``detector.json``)."""
    keys = [
        ("init", lambda t, i, d: t.get("init")),
        ("encoder (pretraining)", lambda t, i, d: f"{t.get('encoder')} ({_pretraining(t, i, d)})"),
        ("iterations", lambda t, i, d: t.get("iters")),
        (
            "batch (SAR:DOTA:DV)",
            lambda t, i, d: (
                f"{t['settings']['batch_size']} ("
                + ":".join(
                    str(v) for _, v in _ordered(t["settings"]["source_ratio"], list(DATASETS))
                )
                + ")"
            ),
        ),
        (
            "image long side",
            lambda t, i, d: ", ".join(
                f"{m} {v}" for m, v in _ordered(t["settings"]["image_sizes"], MODALITIES)
            ),
        ),
        (
            "heads",
            lambda t, i, d: ", ".join(
                f"{k} {v}" for k, v in _ordered(t["settings"]["heads"], list(DATASETS))
            ),
        ),
        (
            "lr / precision",
            lambda t, i, d: f"{t['settings']['lr']:g} / {t['settings']['precision']}",
        ),
        (
            "loss first → peak → final",
            lambda t, i, d: (
                f"{t['first_loss']:.2f} → {t['peak_loss']:.2f} → {t['final_loss']:.2f}"
                if t.get("peak_loss")
                else "–"
            ),
        ),
        ("non-finite steps", lambda t, i, d: t.get("nonfinite_steps")),
        ("mean grad cosine (encoder)", lambda t, i, d: _cosines(t)),
        ("train time", lambda t, i, d: _train_time(t)),
        ("threads / device", lambda t, i, d: f"{t.get('threads')} / {t.get('device')}"),
        (
            "eval splits",
            lambda t, i, d: ", ".join(
                f"{k} {v}" for k, v in _ordered(i.get("splits", {}), list(DATASETS))
            ),
        ),
        ("eval time", lambda t, i, d: f"{i.get('eval_s')} s"),
    ]
    head = ["setting"] + [r["label"] for r in rows]
    lines = table_head(head)
    for name, fn in keys:
        cells = []
        for r in rows:
            try:
                cells.append(str(fn(r.get("train", {}), r.get("info", {}), r.get("detector", {}))))
            except (KeyError, TypeError, ValueError):
                cells.append("–")
        lines.append(table_row([name, *cells]))
    return "\n".join(lines)


def _cosines(train: dict[str, Any]) -> str:
    c = {
        k.split(".", 2)[2]: v
        for k, v in train.get("grad_cosine_mean", {}).items()
        if k.startswith("gradcos.encoder.")
    }
    return ", ".join(f"{k} {v:+.3f}" for k, v in sorted(c.items())) or "–"


def load_run(
    label: str, eval_dir: str | os.PathLike[str], finetune_dir: str | os.PathLike[str]
) -> dict:
    """A results row from an evaluation folder and its fine-tuning folder."""
    eval_dir, finetune_dir = Path(eval_dir), Path(finetune_dir)
    row = {"label": label, "eval": json.loads((eval_dir / "metrics" / "eval.json").read_text())}
    for key, path in (
        ("info", eval_dir / "eval_info.json"),
        ("train", finetune_dir / "train.json"),
    ):
        row[key] = json.loads(path.read_text()) if path.exists() else {}
    det = finetune_dir / "detector.json"
    row["detector"] = json.loads(det.read_text()) if det.exists() else {}
    history = finetune_dir / "metrics.jsonl"
    if row["train"] and history.exists():
        lines = [json.loads(x) for x in history.read_text().splitlines() if x.strip()]
        losses = [x["loss"] for x in lines if x.get("loss") is not None]
        cpu = [x["cpu_s_per_iter"] for x in lines[1:] if x.get("cpu_s_per_iter") is not None]
        row["train"].setdefault("peak_loss", max(losses) if losses else None)
        row["train"]["cpu_s_per_iter"] = sum(cpu) / len(cpu) if cpu else None
    return row


def results_section(
    rows: Sequence[dict[str, Any]], command: str | None = None, note: str | None = None
) -> str:
    """The whole "Detector fine-tuning" section (generated; do not edit by hand)."""
    parts = [
        SECTION,
        "",
        "<!-- generated by babelrs_core.io.results_md.update_results_md; do not edit -->",
        "",
        "Shared detector (our encoder as an mmdet backbone + one FPN + one head per dataset) "
        "fine-tuned on SOI-mini with the same settings, differing only in the "
        "encoder's starting weights (`finetune.init`): **csia** = this pipeline's CSIA + LVSA "
        "pretraining output (early alignment), **imagenet** = the encoder's ImageNet weights "
        "(late-alignment baseline). Scores in percent on each dataset's SOI-Det evaluation split; "
        "overall = mean over the union of classes present, H-mAP = harmonic mean of the "
        "per-dataset mAPs ([method.md §4.2](method.md#42-metrics)). As in the paper, SAR is scored "
        "with horizontal boxes (COCO AP) and datasets with oriented heads (`box_type: obox`, "
        "marked *rotated*) with rotated boxes (mmrotate's DOTA metric: rotated IoU, VOC area AP "
        "at IoU 0.50:0.05:0.95); overall and H-mAP mix the two kinds as the paper does. The *all "
        "horizontal* row scores the same predictions by their enclosing horizontal boxes "
        "(COCO AP everywhere). The paper row (ViT-L, full SOI-Det, Oriented R-CNN for DOTA / "
        "DroneVehicle) is for orientation only: its absolute numbers are not comparable.",
        "",
        results_table(rows),
        "",
        "Run settings:",
        "",
        settings_table(rows),
        "",
    ]
    if note:
        parts += [note, ""]
    if command:
        parts += ["Reproduce:", "", "```", command, "```", ""]
    return "\n".join(parts)
