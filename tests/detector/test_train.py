"""Fine-tuning and evaluation end to end on fake data: the loss falls, metrics / plots /
checkpoints are written, an interrupted run resumes from its last checkpoint, damaged or foreign
checkpoints are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from babelrs_core.detector import checkpoint as ckpt
from babelrs_core.detector.checkpoint import DetectorCheckpointError
from babelrs_core.detector.train import run_finetune
from babelrs_core.io.hashing import file_sha256
from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params
from tests.images import assert_png

torch.set_num_threads(1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_fake_manifest(tmp_path)
    make_fake_encoder(tmp_path / "pretrain")
    return tmp_path


class CrashError(RuntimeError):
    pass


def _crash_at(iteration: int):
    def cb(it: int, metrics: dict) -> None:
        if it >= iteration:
            raise CrashError(f"simulated crash at iteration {it}")

    return cb


@pytest.mark.slow
def test_finetune_resume_evaluate_and_infer(root: Path) -> None:
    from babelrs_core.detector.inference import Detector
    from babelrs_core.evaluation.report import run_evaluation

    # RetinaNet's focal loss falls steadily from its prior; GFL's quality-weighted losses first
    # rise while the predicted scores grow, so the falling-loss check reads the RetinaNet heads
    heads = {
        "finetune.heads.sardet.type": "retinanet",
        "finetune.heads.dronevehicle.type": "retinanet",
        "finetune.heads.dota.score_thr": 0.001,  # keep low-score oriented detections: polygons
        "finetune.heads.dronevehicle.score_thr": 0.001,
    }
    val = {"finetune.val_every": 4, "finetune.val_split": "train", "finetune.val_max_images": 3}
    params = tiny_params(root, **{"finetune.iters": 16, "finetune.warmup_iters": 4, **heads, **val})
    seen: list[int] = []
    with pytest.raises(CrashError):
        run_finetune(params, callbacks=[lambda it, m: seen.append(it), _crash_at(6)])
    ckdir = root / "finetune" / "checkpoints"
    assert not (ckdir / "iter_8.pth").exists()
    crashed = ckpt.safe_load_training_checkpoint(ckdir / "iter_4.pth")  # loads, at iteration 4
    assert crashed["meta"]["iter"] == 4 and crashed["state_dict"]
    assert ckpt.latest_training_checkpoint(ckdir) == ckdir / "iter_4.pth"
    assert not (root / "finetune" / "detector.json").exists()

    seen_metrics: list[dict] = []
    summary = run_finetune(
        params, callbacks=[lambda it, m: seen.append(it), lambda it, m: seen_metrics.append(m)]
    )
    assert summary["resumed_from"] == 4 and summary["iters_this_run"] == 12
    lines = [json.loads(x) for x in (root / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines] == list(range(2, 17, 2))  # no gap, no duplicate
    first, last = lines[0], lines[-1]
    for key in ("loss", "sardet.loss", "dota.loss", "dronevehicle.loss", "sardet.loss_cls",
                "grad_norm", "lr", "nonfinite_steps", "s_per_iter"):  # fmt: skip
        assert key in last, key
    assert any("gradcos.encoder.dota~sardet" in x for x in lines)
    assert last["nonfinite_steps"] == 0
    for key in ("loss", "sardet.loss", "dronevehicle.loss"):
        assert np.mean([x[key] for x in lines[-2:]]) < 0.9 * np.mean([x[key] for x in lines[:2]])
    assert first["lr"] < params.finetune.lr  # warmup
    # validation scores during training: every 4 iterations, cut back to the resumed iteration
    curve = (root / "finetune" / "validation.csv").read_text().splitlines()
    assert curve[0] == (
        "iter,sardet,dota,dronevehicle,sardet_ap50,dota_ap50,dronevehicle_ap50,hmap"
    )
    assert [int(r.split(",")[0]) for r in curve[1:]] == [4, 8, 12, 16]
    assert all(0 <= float(v) <= 100 for r in curve[1:] for v in r.split(",")[1:])
    assert any(k.startswith("val.") for k in seen_metrics[-1])
    info = json.loads((root / "finetune" / "detector.json").read_text())
    weights = load_file(root / "finetune" / "detector.safetensors")
    assert info["sha256"] == file_sha256(root / "finetune" / "detector.safetensors")
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    train = json.loads((root / "finetune" / "train.json").read_text())
    assert train["resumed_from"] == 4 and train["iters_this_run"] == 12
    run = json.loads((root / "finetune" / "run.json").read_text())
    assert run["seed"] == params.seed and run["finetune"]["lr"] == params.finetune.lr
    assert info["init"] == "csia" and info["modalities"]["sar"]["source"] == "encoder"

    # oriented RGB / IR heads (the shipped default) beside the horizontal SAR head
    assert info["datasets"]["dota"]["box_type"] == "obox"
    assert info["datasets"]["dronevehicle"]["box_type"] == "obox"
    assert info["datasets"]["sardet"]["box_type"] == "hbox"
    result = run_evaluation(params)
    ev = json.loads((root / "eval" / "metrics" / "eval.json").read_text())
    assert set(ev) == {"overall", "sardet", "dota", "dronevehicle"}
    assert {"ap50", "map", "hmap"} <= set(ev["overall"])
    # rotated scores (main) and horizontal ones beside them; H-mAP mixes SAR hbox + RGB/IR rotated
    assert {"hbox_ap50", "hbox_map", "hbox_hmap"} <= set(ev["overall"])
    for ds in ("dota", "dronevehicle"):
        assert {"ap50", "map", "hbox_ap50", "hbox_map"} <= set(ev[ds])
    assert "hbox_map" not in ev["sardet"]
    maps = [ev[d]["map"] for d in ("sardet", "dota", "dronevehicle")]
    expect = 0.0 if min(maps) == 0 else 3 / sum(1 / m for m in maps)
    assert ev["overall"]["hmap"] == pytest.approx(expect, abs=1e-3)
    assert result["info"]["box_types"] == {"sardet": "hbox", "dota": "obox",
                                           "dronevehicle": "obox"}  # fmt: skip
    for ds, scores in ev.items():  # scores are percentages, counts are non-negative integers
        for key, v in scores.items():
            assert isinstance(v, int | float) and np.isfinite(v) and v >= 0, (ds, key, v)
            if "ap" in key:
                assert v <= 100, (ds, key, v)
    assert result["info"]["splits"] == {"sardet": "test", "dota": "val", "dronevehicle": "test"}
    written = ["plots/pr_curves.png", "plots/pr_sardet.csv", "plots/pr_classes.csv",
               "plots/samples_sar.png", "plots/samples_rgb.png", "plots/samples_ir.png",
               "per_class.csv", "per_class.md", "eval_info.json",
               "predictions/dota.json", "plots/orientation.png"]  # fmt: skip
    for name in written:
        path = root / "eval" / name
        if name.endswith(".png"):
            assert_png(path, min_size=(64, 64), min_colours=10)
        elif name.endswith(".json"):
            assert json.loads(path.read_text()) is not None, name
        else:  # CSV / Markdown tables: a header and at least one row
            assert len(path.read_text().strip().splitlines()) >= 2, name
    per_class = (root / "eval" / "per_class.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in per_class[1:]} >= {"sardet", "dota", "dronevehicle"}
    orient = json.loads((root / "eval" / "orientation.json").read_text())
    assert set(orient) == {"dota", "dronevehicle"}  # the oriented heads only
    for o in orient.values():  # the tiny eval splits may hold no elongated object
        assert o["summary"]["elongated_objects"] == len(o["objects"])
        assert {"median_axis_error_deg", "median_pred_aspect"} <= set(o["summary"])
        assert o["summary"]["found_horizontally"] == sum(r["found"] for r in o["objects"])
    assert (root / "eval" / "plots" / "pr_dota.csv").read_text().startswith("recall,precision\n")

    det = Detector.from_checkpoint(root / "finetune")
    img = np.full((50, 70), 90, np.uint8)
    img[10:25, 20:35] = 240
    frame = det.predict_frame(img, "sar")
    assert list(frame.columns)[:5] == ["x1", "y1", "x2", "y2", "score"]
    assert (frame["x2"] <= 70).all() and (frame["y2"] <= 50).all()
    assert set(frame["class_name"]) <= set(det.classes["sardet"])
    assert frame["polygon"].isna().all()  # horizontal head: no polygon
    rgb = np.full((64, 64, 3), 90, np.uint8)
    rgb[20:40, 10:30] = 240
    dets = det.predict(rgb, "rgb")
    assert dets, "the DOTA head returns detections at score_thr 0.001"
    for d in dets:
        assert len(d["polygon"]) == 8 and len(d["rbox"]) == 5
        xs, ys = d["polygon"][0::2], d["polygon"][1::2]
        assert d["x1"] == pytest.approx(max(min(xs), 0), abs=1e-3)
        assert d["y2"] == pytest.approx(min(max(ys), 64), abs=1e-3)
        assert d["rbox"][2] >= d["rbox"][3] and -np.pi / 2 - 1e-6 <= d["rbox"][4] < np.pi / 2
    preds = json.loads((root / "eval" / "predictions" / "dota.json").read_text())
    assert preds and all(len(p["polygon"]) == 8 for p in preds)
    ir = det.predict(np.stack([img] * 3, axis=-1), "dronevehicle")
    assert ir, "the DroneVehicle head returns detections at score_thr 0.001"
    assert all(len(d["polygon"]) == 8 and 0.001 <= d["score"] <= 1 for d in ir)
    assert {d["class_name"] for d in ir} <= set(det.classes["dronevehicle"])
    with pytest.raises(ValueError, match="no head"):
        det.predict(img, "lidar")

    # a damaged exported weight file is refused, naming it
    weights = root / "finetune" / "detector.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DetectorCheckpointError, match=r"detector\.safetensors"):
        Detector.from_checkpoint(root / "finetune")


def _fake_checkpoint_dir(root: Path, content: bytes) -> Path:
    ckdir = root / "finetune" / "checkpoints"
    ckdir.mkdir(parents=True)
    (ckdir / "iter_4.pth").write_bytes(content)
    (ckdir / "last_checkpoint").write_text(str(ckdir / "iter_4.pth"))
    return ckdir / "iter_4.pth"


def test_corrupted_checkpoint_is_refused_with_its_name(root: Path) -> None:
    params = tiny_params(root)
    _fake_checkpoint_dir(root, b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(DetectorCheckpointError, match=r"iter_4\.pth: corrupted"):
        run_finetune(params)


def test_resume_with_other_params_is_refused(root: Path) -> None:
    params = tiny_params(root)
    _fake_checkpoint_dir(root, b"")
    (root / "finetune" / "run.json").write_text(json.dumps({"finetune": {"lr": 1.0}}))
    with pytest.raises(DetectorCheckpointError, match="different params"):
        run_finetune(params)


def test_csia_without_pretraining_output_says_what_to_do(tmp_path: Path) -> None:
    make_fake_manifest(tmp_path)
    params = tiny_params(tmp_path)
    with pytest.raises(FileNotFoundError, match="pretraining output not found"):
        run_finetune(params)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        run_finetune(params, manifest=tmp_path / "nope.parquet")


def test_training_from_shards_alone_through_a_cache_smaller_than_the_data(root: Path) -> None:
    """The loose files gone, fine-tuning reads the shards through a cache a quarter of the
    decoded training images: same losses as from the files, the cache never above its bound,
    and the same with two DataLoader worker processes decoding."""
    from babelrs_core.data.image_source import FileSource, ImageRef, clear_caches, open_source
    from babelrs_core.data.integrity import DataIntegrityError, check_training_data
    from babelrs_core.data.manifest import images, read_manifest
    from babelrs_core.data.shards import INDEX_NAME, write_shards

    short = {"finetune.iters": 4, "finetune.checkpoint_every": 4}
    files = run_finetune(tiny_params(root, **short, **{"images.cache_mb": 0}), resume=False)
    train_rows = images(read_manifest(root / "manifest.parquet")).query("split == 'train'")
    decoded = sum(FileSource().load(ImageRef.of_row(r)).nbytes for r in train_rows.itertuples())

    write_shards(root / "manifest.parquet", root / "shards", 0.02)
    (root / "raw").rename(root / "raw_elsewhere")  # a training machine with manifest + shards
    shards = {
        "images.source": "shards",
        "shards.dir": str(root / "shards"),
        "shards.index": str(root / "shards" / INDEX_NAME),
        "images.cache_mb": decoded / 4 / 2**20,
        "paths.finetune_out": str(root / "ft_shards"),
    }
    clear_caches()
    params = tiny_params(root, **short, **shards)
    check_training_data(params)  # the shards cover the manifest: no loose file needed
    summary = run_finetune(params, resume=False)
    assert summary["final_loss"] == pytest.approx(files["final_loss"], rel=1e-5)
    stats = open_source(params).stats()  # type: ignore[attr-defined]
    assert stats["misses"] > 0 and stats["evictions"] > 0
    assert 0 < stats["peak_bytes"] <= decoded / 4

    workers = tiny_params(root, **short, **shards, **{"images.loader_workers": 2})
    two = run_finetune(workers, resume=False)
    assert np.isfinite(two["final_loss"]) and two["iters_this_run"] == 4
    clear_caches()

    # shards older than the manifest: the missing image is named before any training
    index = root / "shards" / INDEX_NAME
    table = pq.read_table(index)
    pq.write_table(table.slice(1), index)
    gone = table.column("image_id")[0].as_py()
    with pytest.raises(DataIntegrityError, match=f"{gone}.: image not in the shard index"):
        check_training_data(params)
