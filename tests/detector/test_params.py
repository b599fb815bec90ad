"""The finetune / evaluation sections of params.yaml and the mmengine config built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.config import ConfigError, load_params

ROOT = Path(__file__).resolve().parents[2]


def _load(**overrides: object):
    return load_params(ROOT / "params.yaml", overrides)


def test_shipped_defaults() -> None:
    p = _load()
    ft = p.finetune
    assert ft.init == "csia" and ft.batch_size == 4
    assert ft.source_ratio == {"sardet": 2, "dota": 1, "dronevehicle": 1}
    assert set(ft.heads) == {"sardet", "dota", "dronevehicle"}
    assert ft.heads["sardet"].type == "gfl" and ft.heads["sardet"].box_type == "hbox"
    for ds in ("dota", "dronevehicle"):  # oriented boxes (paper), the CPU-friendly rotated head
        assert ft.heads[ds].box_type == "obox" and ft.heads[ds].type == "atss"
    assert ft.heads["dota"].loss_weight == 1.5  # the reference's DOTA weight
    assert ft.modalities["sar"].rot90 == 0.0  # SAR geometry: no quarter turns
    assert p.evaluation.splits == {"sardet": "test", "dota": "val", "dronevehicle": "test"}
    assert p.paths.finetune_out == Path("outputs/finetune")
    assert p.paths.eval_out == Path("outputs/eval")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"finetune.batch_size": 6}, "multiple of the source_ratio sum"),
        ({"finetune.source_ratio": {"sardet": 1, "dota": 1}}, "must equal heads keys"),
        ({"finetune.init": "dino"}, "finetune.init"),
        ({"finetune.heads.dota.type": "yolo"}, "finetune.heads.dota.type"),
        ({"finetune.modalities.sar.mean": [1.0, 2.0]}, "three values"),
        ({"finetune.modalities.sar.mean": [1.0, 2.0, 3.0]}, "both mean and std"),
        ({"finetune.lr_steps": [0.9, 0.5]}, "increasing"),
        ({"finetune.precision": "fp8"}, "finetune.precision"),
        ({"evaluation.splits": {"sardet": "holdout"}}, "evaluation.splits.sardet"),
    ],
)
def test_invalid_values_are_refused(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(**overrides)
    assert fragment in str(err.value)


def test_runner_config_from_params() -> None:
    from babelrs_core.detector.config import runner_config, schedule

    p = _load(**{"finetune.iters": 120, "finetune.warmup_iters": 12})
    norm = {m: {"mean": [0.0] * 3, "std": [1.0] * 3} for m in ("sar", "rgb", "ir")}
    cfg = runner_config(p, "m.parquet", "/tmp/w", norm, pretrained_dir="/tmp/pre")
    assert cfg["train_cfg"] == {"type": "IterBasedTrainLoop", "max_iters": 120, "val_interval": 121}
    sampler = cfg["train_dataloader"]["sampler"]
    assert sampler["type"] == "MultiSourceRatioSampler" and sampler["source_ratio"] == [2, 1, 1]
    sources = cfg["train_dataloader"]["dataset"]["datasets"]
    assert [d["dataset"] for d in sources] == ["sardet", "dota", "dronevehicle"]
    ir_pipe = [t["type"] for t in sources[2]["pipeline"]]
    assert ir_pipe == ["LoadManifestSample", "Resize", "RandomFlip", "RandomFlip", "RandomRot90",
                       "PackDetInputs"]  # fmt: skip
    assert "RandomRot90" not in [t["type"] for t in sources[0]["pipeline"]]
    model = cfg["model"]
    assert model["backbone"]["init"] == "csia" and model["backbone"]["pretrained_dir"] == "/tmp/pre"
    assert model["neck"]["in_channels"] == [40, 112, 320]  # EfficientNet-Lite0 taps
    assert model["heads"]["dota"]["num_classes"] == 15
    assert model["heads"]["sardet"]["anchor_generator"]["strides"] == [8, 16, 32, 64, 128]
    assert cfg["optim_wrapper"]["max_norm"] == p.finetune.clip_grad_norm
    step = _load(**{"finetune.iters": 120, "finetune.warmup_iters": 12,
                    "finetune.lr_schedule": "step"})  # fmt: skip
    warm, steps = schedule(step)
    assert warm["end"] == 12 and steps["milestones"] == [80, 110]


@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_lr_schedules_follow_the_params(kind: str) -> None:
    """The learning rate mmengine's schedulers produce from ``schedule(params)``, step by step."""
    import math

    import torch
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR, MultiStepLR

    from babelrs_core.detector.config import schedule

    p = _load(**{"finetune.iters": 100, "finetune.warmup_iters": 10, "finetune.lr_schedule": kind,
                 "finetune.lr_steps": [0.5, 0.8], "finetune.min_lr_ratio": 0.1})  # fmt: skip
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    kinds = {c.__name__: c for c in (LinearLR, CosineAnnealingLR, MultiStepLR)}
    scheds = [kinds[c.pop("type")](opt, **c) for c in schedule(p)]
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        for s in scheds:
            s.step()
    assert lrs[0] == pytest.approx(p.finetune.warmup_ratio, rel=1e-3)
    assert lrs[10] == pytest.approx(1.0)
    if kind == "step":
        assert lrs[49] == pytest.approx(1.0) and lrs[50] == pytest.approx(0.1)
        assert lrs[80] == pytest.approx(0.01)
    else:
        for i in (10, 40, 70, 99):  # lr = min + (1 - min) (1 + cos(pi t / T)) / 2 after warmup
            want = 0.1 + 0.9 * (1 + math.cos(math.pi * (i - 10) / 90)) / 2
            assert lrs[i] == pytest.approx(want, rel=1e-3), i


def test_oriented_rcnn_config_builds_from_params() -> None:
    from babelrs_core.detector.config import model_config

    p = _load(**{"finetune.heads.dota.type": "oriented_rcnn"})
    norm = {m: {"mean": [0.0] * 3, "std": [1.0] * 3} for m in ("sar", "rgb", "ir")}
    heads = model_config(p, norm)["heads"]
    rcnn = heads["dota"]
    assert rcnn["type"] == "TwoStageHead"
    assert rcnn["rpn_head"]["type"] == "mmrotate.OrientedRPNHead"
    roi = rcnn["roi_head"]
    assert roi["bbox_roi_extractor"]["roi_layer"]["type"] == "RoIAlignRotated"
    assert roi["bbox_roi_extractor"]["featmap_strides"] == [8, 16, 32, 64]
    assert roi["bbox_head"]["num_classes"] == 15 and roi["bbox_head"]["predict_box_type"] == "rbox"
    assert rcnn["test_cfg"]["rcnn"]["nms"]["type"] == "nms_rotated"
    assert heads["dronevehicle"]["type"] == "mmrotate.RotatedATSSHead"
    assert heads["dronevehicle"]["loss_bbox"]["loss"]["type"] == "ModulatedRotatedL1Loss"
    assert heads["dronevehicle"]["bbox_coder"]["angle_version"] == "le90"
    assert heads["sardet"]["type"] == "GFLHead"


def test_rotated_nms_per_class_keeps_what_the_shifted_single_call_keeps() -> None:
    """The oriented heads run rotated NMS one class at a time (``split_thr: 0``, a speed-up of
    the CPU kernel); mmcv's default (all classes shifted apart, one call) keeps the same boxes."""
    import torch
    from mmcv.ops import batched_nms

    from babelrs_core.detector.config import model_config

    p = _load()
    norm = {m: {"mean": [0.0] * 3, "std": [1.0] * 3} for m in ("sar", "rgb", "ir")}
    heads = model_config(p, norm)["heads"]
    for ds in ("dota", "dronevehicle"):
        nms = heads[ds]["test_cfg"]["nms"]
        assert nms["type"] == "nms_rotated" and nms["split_thr"] == 0
        single = {k: v for k, v in nms.items() if k != "split_thr"}
        g = torch.Generator().manual_seed(0)
        n = 400  # crowded: boxes of 5 classes piled on a 64 px square, many overlapping
        boxes = torch.cat(
            [
                torch.rand(n, 2, generator=g) * 64,
                4 + torch.rand(n, 2, generator=g) * 20,
                (torch.rand(n, 1, generator=g) - 0.5) * torch.pi,
            ],
            dim=1,
        )
        scores = torch.rand(n, generator=g)
        labels = torch.randint(0, 5, (n,), generator=g)
        dets_split, keep_split = batched_nms(boxes, scores, labels, nms)
        dets_one, keep_one = batched_nms(boxes, scores, labels, single)
        assert 0 < len(keep_one) < n  # NMS did suppress boxes
        assert sorted(keep_split.tolist()) == sorted(keep_one.tolist())
        assert torch.equal(dets_split[:, -1], dets_one[:, -1])  # both sorted by score
