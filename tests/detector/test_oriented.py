"""Oriented-box heads and data: augmentations keep polygons on their objects, rotated RetinaNet
and Oriented R-CNN train and predict beside a horizontal SAR head, configs refuse bad combos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from babelrs_core.detector.config import register_all

torch.set_num_threads(1)
register_all()

from mmdet.registry import DATASETS, MODELS, TRANSFORMS  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmrotate.structures.bbox import RotatedBoxes  # noqa: E402

from babelrs_core.config import ConfigError  # noqa: E402
from babelrs_core.detector.config import model_config, source_datasets  # noqa: E402
from babelrs_core.detector.data import make_boxes, train_pipeline  # noqa: E402
from babelrs_core.detector.rbox import poly_to_rbox, rbox_to_poly  # noqa: E402
from tests.detector.det_fakes import make_fake_manifest, tiny_params  # noqa: E402

NORM = {m: {"mean": [100.0] * 3, "std": [40.0] * 3} for m in ("sar", "rgb", "ir")}
# a 36 x 12 bar turned ~30°, listed clockwise from its head corner (DOTA order)
BAR = rbox_to_poly([[60.0, 44.0, 36.0, 12.0, np.pi / 6]])[0].tolist()


def _mask(poly, h: int, w: int) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([float(v) for v in poly], fill=1)
    return np.asarray(im, bool)


def _results(poly, label: int, h: int = 90, w: int = 120) -> dict:
    img = np.zeros((h, w, 3), np.uint8)
    img[_mask(poly, h, w)] = 255
    return {
        "img": img,
        "img_shape": (h, w),
        "ori_shape": (h, w),
        "gt_bboxes": make_boxes([{"poly": poly}], "obox"),
        "gt_bboxes_labels": np.array([label]),
        "gt_ignore_flags": np.array([False]),
    }


def _box_matches_pixels(res: dict) -> float:
    """IoU of the bright pixels and the transformed box's polygon."""
    h, w = res["img"].shape[:2]
    box = res["gt_bboxes"]
    assert isinstance(box, RotatedBoxes) and len(box) == 1
    drawn = _mask(rbox_to_poly(box.tensor.numpy())[0], h, w)
    bright = res["img"][..., 0] > 127
    return (drawn & bright).sum() / (drawn | bright).sum()


@pytest.mark.parametrize(
    "step",
    [
        {"type": "RandomFlip", "prob": 1.0, "direction": "horizontal"},
        {"type": "RandomFlip", "prob": 1.0, "direction": "vertical"},
        {"type": "RandomRot90", "prob": 1.0},
        {
            "type": "mmrotate.RandomRotate",
            "prob": 1.0,
            "angle_range": 180,
            "rotate_type": "mmrotate.Rotate",
        },
    ],
)
def test_augmentations_keep_oriented_boxes_on_their_objects(step: dict) -> None:
    assert _box_matches_pixels(_results(BAR, 0)) > 0.85  # the drawing itself
    t = TRANSFORMS.build(step)
    for seed in range(4):
        np.random.seed(seed)
        res = t(_results(BAR, 0))
        assert _box_matches_pixels(res) > 0.8, (step["type"], seed)
        assert sorted(res["gt_bboxes"].tensor[0, 2:4].tolist()) == pytest.approx([12, 36], abs=0.5)


def test_free_rotation_only_for_obox_and_quarter_turns_for_round_classes() -> None:
    pipe = train_pipeline("obox", 128, 0, 0, 0, False, rotate=1.0, rotate_range=180,
                          dataset="dota")  # fmt: skip
    rot = [t for t in pipe if t["type"] == "mmrotate.RandomRotate"]
    assert len(rot) == 1 and rot[0]["rect_obj_labels"] == [10, 12]  # roundabout, storage-tank
    assert not any("Rotate" in t["type"] for t in train_pipeline("hbox", 128, 0, 0, 0, False, 1.0))
    t = TRANSFORMS.build(rot[0])
    before = poly_to_rbox([BAR])[0]
    for seed in range(6):
        np.random.seed(seed)
        after = t(_results(BAR, 10))["gt_bboxes"].tensor[0].numpy()  # a roundabout
        turn = (after[4] - before[4]) / (np.pi / 2)
        assert abs(turn - round(turn)) < 1e-3, seed
    np.random.seed(0)
    free = [t(_results(BAR, 2))["gt_bboxes"].tensor[0, 4].item() for _ in range(6)]  # planes
    turns = [(a - before[4]) / (np.pi / 2) for a in free]
    assert any(abs(x - round(x)) > 0.05 for x in turns)


def test_random_crop_keeps_boxes_on_their_objects_at_the_same_scale() -> None:
    pipe = train_pipeline("obox", 120, 0, 0, 0, False, crop=40)
    crop = [t for t in pipe if t["type"] == "RandomCrop"]
    assert len(crop) == 1 and crop[0]["crop_size"] == (40, 40)
    assert not any(t["type"] == "RandomCrop" for t in train_pipeline("obox", 120, 0, 0, 0, False))
    t = TRANSFORMS.build(crop[0])
    kept = dropped = 0
    for seed in range(12):
        np.random.seed(seed)
        res = t(_results(BAR, 0))
        if res is None:  # the window missed the bar's centre: no object, drawn again elsewhere
            dropped += 1
            continue
        kept += 1
        assert res["img"].shape[:2] == (40, 40)
        assert _box_matches_pixels(res) > 0.8, seed
        assert sorted(res["gt_bboxes"].tensor[0, 2:4].tolist()) == pytest.approx([12, 36], abs=0.5)
    assert kept and dropped


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oriented")
    make_fake_manifest(root)
    return root


def _batch(params, root: Path):
    dss = [DATASETS.build(c) for c in source_datasets(params, root / "manifest.parquet")]
    return pseudo_collate([dss[0][0], dss[0][1], dss[1][0], dss[2][0]])


@pytest.mark.parametrize("dota_head", ["retinanet", "atss", "oriented_rcnn"])
def test_oriented_heads_train_and_predict_beside_a_horizontal_sar_head(
    root: Path, dota_head: str
) -> None:
    params = tiny_params(root, **{"finetune.init": "scratch",
                                  "finetune.heads.dota.type": dota_head})  # fmt: skip
    assert params.finetune.heads["dronevehicle"].box_type == "obox"  # the shipped default
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(model_config(params, NORM)))
    model.init_weights()
    data = model.data_preprocessor(_batch(params, root), True)
    samples = data["data_samples"]
    assert isinstance(samples[0].gt_instances.bboxes, torch.Tensor)  # SAR: plain tensor
    assert not isinstance(samples[0].gt_instances.bboxes, HorizontalBoxes)
    assert isinstance(samples[2].gt_instances.bboxes, RotatedBoxes)  # DOTA: rotated boxes
    losses = model.loss(data["inputs"], samples)
    keys = set(losses)
    if dota_head == "oriented_rcnn":
        rcnn = {"dota.loss_rpn_cls", "dota.loss_rpn_bbox", "dota.loss_cls", "dota.loss_bbox"}
        assert rcnn <= keys
    if dota_head == "atss":
        assert "dota.loss_centerness" in keys
    assert {"sardet.loss_dfl", "dronevehicle.loss_cls", "dronevehicle.loss_bbox"} <= keys
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.heads["dota"].parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(_batch(params, root), False)
        out = model.predict(data["inputs"], data["data_samples"])
    dims = [o.pred_instances.bboxes.shape[-1] for o in out]
    assert dims == [4, 4, 5, 5]  # SAR horizontal, DOTA / DroneVehicle (cx, cy, w, h, θ)


def test_rroi_features_are_read_from_nchw_maps_under_channels_last(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mmcv's RoI ops index the raw buffer as NCHW: on channels-last maps (finetune.channels_last)
    they return wrong features without an error (the Oriented R-CNN probe stopped learning). The
    RoI head must only ever get NCHW maps."""
    from mmcv.ops import RoIAlignRotated

    x = torch.randn(1, 8, 32, 32)
    rois = torch.tensor([[0, 16.0, 16.0, 10.0, 6.0, 0.3]])
    op = RoIAlignRotated((7, 7), 1.0, 2)
    wrong = op(x.contiguous(memory_format=torch.channels_last), rois)
    assert not torch.allclose(op(x, rois), wrong)  # the mmcv behaviour the guard exists for

    params = tiny_params(root, **{"finetune.init": "scratch",
                                  "finetune.heads.dota.type": "oriented_rcnn"})  # fmt: skip
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(model_config(params, NORM)))
    model.init_weights()
    assert model.backbone.encoder.channels_last  # the shipped default
    extractor = model.heads["dota"].roi_head.bbox_roi_extractor
    seen: list[bool] = []
    forward = extractor.forward

    def spy(feats, *args, **kwargs):
        seen.extend(f.is_contiguous() for f in feats)
        return forward(feats, *args, **kwargs)

    monkeypatch.setattr(extractor, "forward", spy)
    # a batch of DOTA images only: the head gets the FPN maps as they are (not index-selected)
    dota = [DATASETS.build(c) for c in source_datasets(params, root / "manifest.parquet")][1]
    data = model.data_preprocessor(pseudo_collate([dota[0], dota[1]]), True)
    model.loss(data["inputs"], data["data_samples"])
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(pseudo_collate([dota[0], dota[1]]), False)
        model.predict(data["inputs"], data["data_samples"])
    assert seen and all(seen), seen


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"finetune.heads.dota.type": "gfl"}, "no obox head"),
        ({"finetune.heads.sardet.type": "oriented_rcnn"}, "no hbox head"),
        ({"finetune.modalities.rgb.rotate_range": 200}, "rotate_range"),
    ],
)
def test_bad_oriented_settings_are_refused(root: Path, overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        tiny_params(root, **overrides)
