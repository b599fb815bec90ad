"""mmdet head configs per dataset, from ``finetune.heads`` in params.

Each head is a plain mmdet dense head (GFL, RetinaNet, FCOS, ATSS) whose ``train_cfg`` and
``test_cfg`` sit inside its own config, so that the multi-head detector can build heads of different
types side by side. Horizontal boxes only here: ``box_type: obox`` is rejected with a pointer to the
oriented-box issue, which adds a builder for mmrotate heads to :data:`HEAD_BUILDERS` (keyed by
``(type, box_type)``) without touching the detector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from babelrs_core.concepts import DATASETS

HeadCfg = dict[str, Any]


def _test_cfg(spec: Any, nms_pre: int = 1000) -> HeadCfg:
    return {
        "nms_pre": nms_pre,
        "min_bbox_size": 0,
        "score_thr": spec.score_thr,
        "nms": {"type": "nms", "iou_threshold": spec.nms_iou},
        "max_per_img": spec.max_per_img,
    }


def _common(spec: Any, num_classes: int, in_channels: int) -> HeadCfg:
    return {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stacked_convs": spec.stacked_convs,
        "feat_channels": spec.feat_channels,
        "norm_cfg": _group_norm(spec.feat_channels),
    }


def _group_norm(channels: int) -> HeadCfg:
    """GroupNorm with up to 32 groups of at least 2 channels (1x1 maps of small images work)."""
    groups = max(1, min(32, channels // 2))
    while channels % groups:
        groups -= 1
    return {"type": "GN", "num_groups": groups, "requires_grad": True}


def gfl_head(spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """GFL (the paper's SAR head, BABELRS.md §3.3): QFL + DFL + GIoU, ATSS assignment."""
    return {
        "type": "GFLHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": {
            "type": "AnchorGenerator",
            "ratios": [1.0],
            "octave_base_scale": spec.anchor_scale,
            "scales_per_octave": 1,
            "strides": list(strides),
        },
        "loss_cls": {
            "type": "QualityFocalLoss",
            "use_sigmoid": True,
            "beta": 2.0,
            "loss_weight": 1.0,
        },
        "loss_dfl": {"type": "DistributionFocalLoss", "loss_weight": 0.25},
        "reg_max": 16,
        "loss_bbox": {"type": "GIoULoss", "loss_weight": 2.0},
        "train_cfg": {
            "assigner": {"type": "ATSSAssigner", "topk": 9},
            "allowed_border": -1,
            "pos_weight": -1,
            "debug": False,
        },
        "test_cfg": _test_cfg(spec),
    }


def retina_head(spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """RetinaNet: focal loss, 9 anchors per location, max-IoU assignment."""
    return {
        "type": "RetinaHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": {
            "type": "AnchorGenerator",
            "octave_base_scale": spec.anchor_scale,
            "scales_per_octave": 3,
            "ratios": [0.5, 1.0, 2.0],
            "strides": list(strides),
        },
        "bbox_coder": {
            "type": "DeltaXYWHBBoxCoder",
            "target_means": [0.0, 0.0, 0.0, 0.0],
            "target_stds": [1.0, 1.0, 1.0, 1.0],
        },
        "loss_cls": {
            "type": "FocalLoss",
            "use_sigmoid": True,
            "gamma": 2.0,
            "alpha": 0.25,
            "loss_weight": 1.0,
        },
        "loss_bbox": {"type": "L1Loss", "loss_weight": 1.0},
        "train_cfg": {
            "assigner": {
                "type": "MaxIoUAssigner",
                "pos_iou_thr": 0.5,
                "neg_iou_thr": 0.4,
                "min_pos_iou": 0,
                "ignore_iof_thr": -1,
            },
            "sampler": {"type": "PseudoSampler"},
            "allowed_border": -1,
            "pos_weight": -1,
            "debug": False,
        },
        "test_cfg": _test_cfg(spec),
    }


def fcos_head(spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """FCOS: anchor-free, centre-ness branch; regress ranges scaled to the strides."""
    strides = list(strides)
    bounds = [-1] + [8 * s for s in strides[:-1]] + [100000000]
    return {
        "type": "FCOSHead",
        **_common(spec, num_classes, in_channels),
        "strides": strides,
        "regress_ranges": [(bounds[i], bounds[i + 1]) for i in range(len(strides))],
        "loss_cls": {
            "type": "FocalLoss",
            "use_sigmoid": True,
            "gamma": 2.0,
            "alpha": 0.25,
            "loss_weight": 1.0,
        },
        "loss_bbox": {"type": "IoULoss", "loss_weight": 1.0},
        "loss_centerness": {
            "type": "CrossEntropyLoss",
            "use_sigmoid": True,
            "loss_weight": 1.0,
        },
        "train_cfg": {
            "assigner": {
                "type": "MaxIoUAssigner",
                "pos_iou_thr": 0.5,
                "neg_iou_thr": 0.4,
                "min_pos_iou": 0,
                "ignore_iof_thr": -1,
            },
            "allowed_border": -1,
            "pos_weight": -1,
            "debug": False,
        },
        "test_cfg": _test_cfg(spec),
    }


def atss_head(spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """ATSS: one anchor per location, adaptive training-sample selection, GIoU."""
    return {
        "type": "ATSSHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": {
            "type": "AnchorGenerator",
            "ratios": [1.0],
            "octave_base_scale": spec.anchor_scale,
            "scales_per_octave": 1,
            "strides": list(strides),
        },
        "bbox_coder": {
            "type": "DeltaXYWHBBoxCoder",
            "target_means": [0.0, 0.0, 0.0, 0.0],
            "target_stds": [0.1, 0.1, 0.2, 0.2],
        },
        "loss_cls": {
            "type": "FocalLoss",
            "use_sigmoid": True,
            "gamma": 2.0,
            "alpha": 0.25,
            "loss_weight": 1.0,
        },
        "loss_bbox": {"type": "GIoULoss", "loss_weight": 2.0},
        "loss_centerness": {
            "type": "CrossEntropyLoss",
            "use_sigmoid": True,
            "loss_weight": 1.0,
        },
        "train_cfg": {
            "assigner": {"type": "ATSSAssigner", "topk": 9},
            "allowed_border": -1,
            "pos_weight": -1,
            "debug": False,
        },
        "test_cfg": _test_cfg(spec),
    }


HeadBuilder = Callable[[Any, int, int, Sequence[int]], HeadCfg]

#: ``(head type, box type) -> builder``; the oriented-box issue registers ``(..., "obox")`` here.
HEAD_BUILDERS: dict[tuple[str, str], HeadBuilder] = {
    ("gfl", "hbox"): gfl_head,
    ("retinanet", "hbox"): retina_head,
    ("fcos", "hbox"): fcos_head,
    ("atss", "hbox"): atss_head,
}


def head_config(dataset_name: str, spec: Any, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """The mmdet config of ``dataset_name``'s head (its own classes, in dataset order)."""
    key = (spec.type, spec.box_type)
    if key not in HEAD_BUILDERS:
        if spec.box_type == "obox":
            raise NotImplementedError(
                f"finetune.heads.{dataset_name}: box_type obox (oriented boxes, mmrotate) is not "
                "available yet; use hbox"
            )
        known = ", ".join(f"{t}/{b}" for t, b in sorted(HEAD_BUILDERS))
        raise ValueError(f"finetune.heads.{dataset_name}: no head {key}; known: {known}")
    num_classes = len(DATASETS[dataset_name].classes)
    return HEAD_BUILDERS[key](spec, num_classes, in_channels, strides)
