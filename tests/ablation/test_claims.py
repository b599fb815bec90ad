"""The ablation's claims from run folders: paired bootstrap intervals of ours against each
variant, the plain sentences, and old outputs without predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from babelrs_core.ablation import claims as claims_mod
from babelrs_core.ablation.claims import claim_statements, claims_markdown, compute_claims
from babelrs_core.ablation.plan import build_plan
from babelrs_core.config import load_params
from babelrs_core.evaluation import bootstrap
from babelrs_core.evaluation.metrics import (
    coco_detections,
    coco_ground_truth,
    evaluate_coco,
    summarize,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["ship", "aircraft", "car", "tank", "bridge", "harbor"]


def _ground_truth(n: int = 30) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(1, n + 1):
        objs = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = (float(v) for v in rng.uniform(0, 150, 2))
            objs.append({"bbox": [x, y, x + 20, y + 20], "label": int(rng.integers(0, 2)),
                         "difficult": False, "poly": None})  # fmt: skip
        out.append({"id": i, "width": 200, "height": 200, "objects": objs, "file": f"im{i}"})
    return out


def _detections(gt: list[dict], miss: float, seed: int) -> dict[int, list[dict]]:
    """Every object found with a random score, a share ``miss`` of them replaced by a miss."""
    rng = np.random.default_rng(seed)
    preds: dict[int, list[dict]] = {}
    for img in gt:
        dets = []
        for o in img["objects"]:
            x1, y1, x2, y2 = o["bbox"]
            if rng.random() < miss:
                x1, y1, x2, y2 = x1 + 15, y1 + 15, x2 + 15, y2 + 15
            dets.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2,
                         "score": float(rng.random()), "label": o["label"]})  # fmt: skip
        preds[img["id"]] = dets
    return preds


def _write_eval(eval_dir: Path, gt: list[dict], preds: dict[int, list[dict]]) -> dict:
    dets = coco_detections(preds)
    score = evaluate_coco("sardet", coco_ground_truth(gt, NAMES), dets)
    ev = summarize([score])
    (eval_dir / "metrics").mkdir(parents=True)
    (eval_dir / "predictions").mkdir()
    (eval_dir / "metrics" / "eval.json").write_text(json.dumps(ev))
    info = {"manifest": "unused.parquet", "splits": {"sardet": "test"},
            "box_types": {"sardet": "hbox"}, "ignore_difficult": True, "max_dets": 100}  # fmt: skip
    (eval_dir / "eval_info.json").write_text(json.dumps(info))
    files = {img["id"]: img["file"] for img in gt}
    (eval_dir / "predictions" / "sardet.json").write_text(
        json.dumps([{**d, "image": files[d["image_id"]]} for d in dets])
    )
    return ev


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    gt = _ground_truth()
    monkeypatch.setattr(bootstrap, "ground_truth", lambda *a, **k: gt)
    params = load_params(
        ROOT / "params.yaml",
        {"ablation": {
            "variants": {"ours": {"label": "ours", "init": "csia"},
                         "same": {"label": "same", "init": "csia", "pretrain": {"lvsa.tau": 0}},
                         "imagenet": {"label": "ImageNet", "init": "imagenet"}},
            "expected_order": ["ours", "same", "imagenet"], "precisions": ["fp32"],
            "seeds": [0, 1], "out_root": str(tmp_path / "ablation"), "bootstrap_samples": 200,
            "label_variants": [], "compute_controls": {}}},
    )  # fmt: skip
    plan = build_plan(params, "cpu")
    rows = []
    for job in plan.finetunes:
        miss = 0.6 if job.variant == "imagenet" else 0.0
        ev = _write_eval(job.eval_dir, gt, _detections(gt, miss, job.seed))
        rows.append({"variant": job.variant, "seed": job.seed, "precision": job.precision,
                     "mode": "full", "status": "ok", "eval": ev})  # fmt: skip
    return plan, rows


def test_claims_read_from_the_run_folders(runs) -> None:
    plan, rows = runs
    c = compute_claims(plan, rows, "fp32")
    assert c["problem"] is None and not c["mismatched"] and not c["no_predictions"]
    assert c["keys"][0] == "overall.hmap" and c["images"] == {"sardet": 30}
    same, imagenet = c["comparisons"]
    assert same["variant"] == "same" and same["seeds"] == [0, 1]
    for iv in same["intervals"].values():  # the same detections: exactly zero
        assert (iv["delta"], iv["low"], iv["high"], iv["verdict"]) == (0, 0, 0, "not shown")
    hm = imagenet["intervals"]["overall.hmap"]
    assert hm["verdict"] == "shown" and 0 < hm["low"] <= hm["delta"] <= hm["high"]
    # the point estimate is the mean over seeds of the eval.json difference
    mean = {v: np.mean([r["eval"]["overall"]["hmap"] for r in rows if r["variant"] == v])
            for v in ("ours", "imagenet")}  # fmt: skip
    assert hm["delta"] == pytest.approx(mean["ours"] - mean["imagenet"], abs=1e-3)
    s = claim_statements(c)
    assert s[0] == "ours > same: *not shown* (Δ H-mAP +0.00, 95 % CI [0.00, 0.00])"
    assert s[1].startswith(f"ours > imagenet: *shown* (Δ H-mAP {hm['delta']:+.2f}, 95 % CI [")
    text = claims_markdown(c)
    assert f"* {s[1]}" in text and "200 resamples" in text and "SAR 30" in text
    assert "| ours > imagenet | 0, 1 |" in text


def test_old_outputs_without_predictions_are_named_not_fatal(runs) -> None:
    plan, rows = runs
    for job in plan.finetunes:
        if job.variant == "imagenet" and job.seed == 1:
            (job.eval_dir / "predictions" / "sardet.json").unlink()
    c = compute_claims(plan, rows, "fp32")
    assert c["no_predictions"] == ["imagenet/fp32/seed1"]
    assert c["comparisons"][1]["seeds"] == [0]  # paired on the seed both still have
    assert "imagenet/fp32/seed1" in claims_markdown(c)
    for job in plan.finetunes:
        for f in (job.eval_dir / "predictions").glob("*.json"):
            f.unlink()
    c = compute_claims(plan, rows, "fp32")
    assert c["problem"] and c["comparisons"] == []
    text = claims_markdown(c)
    assert "No claims: the `ours` runs at fp32 have no saved predictions." in text
    assert claim_statements(c)[0] in text


def test_a_changed_manifest_is_reported(runs, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, rows = runs
    for r in rows:
        if r["variant"] == "ours" and r["seed"] == 0:
            r["eval"] = {**r["eval"], "overall": {**r["eval"]["overall"], "hmap": 1.0}}
    c = compute_claims(plan, rows, "fp32")
    assert c["mismatched"] == ["ours/fp32/seed0"]
    assert "differ from `metrics/eval.json` for ours/fp32/seed0" in claims_markdown(c)
    assert claims_mod.REFERENCE == "ours"
