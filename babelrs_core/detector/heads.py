"""mmdet head configs per dataset, from ``finetune.heads`` in params.

Each head carries its own ``train_cfg`` and ``test_cfg``, so that the multi-head detector can build
heads of different types side by side. :data:`HEAD_BUILDERS` is keyed by ``(type, box_type)``:

* ``hbox``: plain mmdet dense heads (GFL, RetinaNet, FCOS, ATSS) on ``HorizontalBoxes``.
* ``obox``: mmrotate 1.x heads on ``RotatedBoxes`` in the ``le90`` angle convention --
  rotated ATSS (``atss``, single stage, the CPU default) and rotated RetinaNet (``retinanet``),
  which need only rotated ops with CPU kernels (``box_iou_rotated``, ``nms_rotated``), and
  Oriented R-CNN (``oriented_rcnn``, the paper's RGB / IR head: oriented RPN + ``RoIAlignRotated``
  box head, wrapped in :class:`~babelrs_core.detector.twostage.TwoStageHead`).

mmrotate parts carry the ``mmrotate.`` scope prefix, so the runner keeps mmdet as its default
scope; nested mmdet parts are found there unprefixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from babelrs_core.concepts import DATASETS

HeadCfg = dict[str, Any]


def _test_cfg(spec: Any, nms: str = "nms", nms_pre: int | None = None) -> HeadCfg:
    return {
        "nms_pre": nms_pre or spec.nms_pre,
        "min_bbox_size": 0,
        "score_thr": spec.score_thr,
        "nms": {"type": nms, "iou_threshold": spec.nms_iou},
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


#: sigmoid focal loss of the anchor / point heads (RetinaNet's settings), in float32 under
#: autocast (mmcv's CUDA kernel has no bf16: losses.Float32FocalLoss)
FOCAL_LOSS: HeadCfg = {
    "type": "Float32FocalLoss",
    "use_sigmoid": True,
    "gamma": 2.0,
    "alpha": 0.25,
    "loss_weight": 1.0,
}


def _dense_train_cfg(assigner: HeadCfg, sampler: HeadCfg | None = None) -> HeadCfg:
    """``train_cfg`` of a dense (one-stage) head: its assigner, a sampler if any, no border."""
    cfg: HeadCfg = {"assigner": assigner}
    if sampler is not None:
        cfg["sampler"] = sampler
    return {**cfg, "allowed_border": -1, "pos_weight": -1, "debug": False}


def _max_iou_assigner(iou_calculator: HeadCfg | None = None) -> HeadCfg:
    """RetinaNet's max-IoU assignment (positive from 0.5, negative below 0.4)."""
    assigner: HeadCfg = {
        "type": "MaxIoUAssigner",
        "pos_iou_thr": 0.5,
        "neg_iou_thr": 0.4,
        "min_pos_iou": 0,
        "ignore_iof_thr": -1,
    }
    if iou_calculator is not None:
        assigner["iou_calculator"] = iou_calculator
    return assigner


def _retina_train_cfg(iou_calculator: HeadCfg | None = None) -> HeadCfg:
    """RetinaNet's training assignment (max IoU 0.5 / 0.4, no sampling), any IoU calculator."""
    return _dense_train_cfg(_max_iou_assigner(iou_calculator), {"type": "PseudoSampler"})


def _atss_train_cfg() -> HeadCfg:
    """ATSS's adaptive training-sample selection (GFL and ATSS heads)."""
    return _dense_train_cfg({"type": "ATSSAssigner", "topk": 9})


#: centre-ness branch loss (FCOS, ATSS, rotated ATSS)
CENTERNESS_LOSS: HeadCfg = {"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 1.0}


def _one_anchor(spec: Any, strides: Sequence[int]) -> HeadCfg:
    """One square anchor per location and level (GFL, ATSS)."""
    return {
        "type": "AnchorGenerator",
        "ratios": [1.0],
        "octave_base_scale": spec.anchor_scale,
        "scales_per_octave": 1,
        "strides": list(strides),
    }


def gfl_head(spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """GFL (the paper's SAR head, docs/method.md §3.3): QFL + DFL + GIoU, ATSS assignment."""
    return {
        "type": "GFLHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": _one_anchor(spec, strides),
        "loss_cls": {
            "type": "QualityFocalLoss",
            "use_sigmoid": True,
            "beta": 2.0,
            "loss_weight": 1.0,
        },
        "loss_dfl": {"type": "DistributionFocalLoss", "loss_weight": 0.25},
        "reg_max": 16,
        "loss_bbox": {"type": "GIoULoss", "loss_weight": 2.0},
        "train_cfg": _atss_train_cfg(),
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
        "loss_cls": dict(FOCAL_LOSS),
        "loss_bbox": {"type": "L1Loss", "loss_weight": 1.0},
        "train_cfg": _retina_train_cfg(),
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
        "loss_cls": dict(FOCAL_LOSS),
        "loss_bbox": {"type": "IoULoss", "loss_weight": 1.0},
        "loss_centerness": dict(CENTERNESS_LOSS),
        "train_cfg": _dense_train_cfg(_max_iou_assigner()),
        "test_cfg": _test_cfg(spec),
    }


def atss_head(spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """ATSS: one anchor per location, adaptive training-sample selection, GIoU."""
    return {
        "type": "ATSSHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": _one_anchor(spec, strides),
        "bbox_coder": {
            "type": "DeltaXYWHBBoxCoder",
            "target_means": [0.0, 0.0, 0.0, 0.0],
            "target_stds": [0.1, 0.1, 0.2, 0.2],
        },
        "loss_cls": dict(FOCAL_LOSS),
        "loss_bbox": {"type": "GIoULoss", "loss_weight": 2.0},
        "loss_centerness": dict(CENTERNESS_LOSS),
        "train_cfg": _atss_train_cfg(),
        "test_cfg": _test_cfg(spec),
    }


ANGLE_VERSION = "le90"  # mmrotate angle convention of every oriented head (the reference's)


def _rotated_test_cfg(spec: Any, nms_pre: int | None = None) -> HeadCfg:
    """Rotated NMS one class at a time (``split_thr: 0``): mmcv's CPU kernel computes the polygon
    IoU of every pair it is given, and its default shifts all classes apart into one call, so
    pairs of different classes cost as much as pairs that can suppress each other. Per class the
    same boxes are kept (each class's boxes get the same shift either way); it is the evaluation's
    largest single cost otherwise (bench/eval_profile.py)."""
    cfg = _test_cfg(spec, "nms_rotated", nms_pre)
    cfg["nms"]["split_thr"] = 0
    return cfg


def _rbox_coder(stds: Sequence[float]) -> HeadCfg:
    return {
        "type": "mmrotate.DeltaXYWHTRBBoxCoder",
        "angle_version": ANGLE_VERSION,
        "norm_factor": None,
        "edge_swap": True,
        "proj_xy": True,
        "target_means": (0.0,) * 5,
        "target_stds": tuple(stds),
    }


def rotated_retina_head(
    spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]
) -> HeadCfg:
    """Rotated RetinaNet (mmrotate ``rotated-retinanet-rbox-le90``): horizontal anchors as
    rotated boxes, rotated-IoU max-IoU assignment, (dx, dy, dw, dh, dθ) deltas with L1 loss.
    Rotated IoUs come from :class:`~babelrs_core.detector.iou.SparseRBboxOverlaps2D` (the same
    values as mmrotate's ``RBboxOverlaps2D``, computed only for pairs that can overlap)."""
    return {
        "type": "mmrotate.RotatedRetinaHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": {
            "type": "mmrotate.FakeRotatedAnchorGenerator",
            "angle_version": ANGLE_VERSION,
            "octave_base_scale": spec.anchor_scale,
            "scales_per_octave": 3,
            "ratios": [1.0, 0.5, 2.0],
            "strides": list(strides),
        },
        "bbox_coder": {**_rbox_coder([1.0] * 5), "use_box_type": True},
        "loss_cls": dict(FOCAL_LOSS),
        "loss_bbox": {"type": "L1Loss", "loss_weight": 1.0},
        "train_cfg": _retina_train_cfg({"type": "SparseRBboxOverlaps2D"}),
        "test_cfg": _rotated_test_cfg(spec),
    }


#: ``finetune.heads.*.box_loss`` of rotated ATSS -> its loss on decoded boxes
GAUSSIAN_BOX_LOSSES: dict[str, HeadCfg] = {
    # mmrotate's KLD, KL(target || pred): rewards widening a box whose centre is uncertain
    "kld": {
        "type": "mmrotate.GDLoss",
        "loss_type": "kld",
        "fun": "log1p",
        "tau": 1.0,
        "loss_weight": 1.0,
    },
    # KL(pred || target): the same divergence without that reward (losses.PredictionKLDLoss)
    "rkld": {"type": "PredictionKLDLoss", "fun": "log1p", "tau": 1.0, "loss_weight": 1.0},
    # mmrotate's Gaussian Wasserstein distance (its rotated RetinaNet GWD recipe: log1p, x5)
    "gwd": {
        "type": "mmrotate.GDLoss",
        "loss_type": "gwd",
        "fun": "log1p",
        "tau": 0.0,
        "loss_weight": 5.0,
    },
    # L1 on target-normalised offsets, modulated over (w, h, θ) ~ (h, w, θ + π/2) (RSDet)
    "mrl1": {"type": "ModulatedRotatedL1Loss", "loss_weight": 1.0},
}


def rotated_atss_head(
    spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]
) -> HeadCfg:
    """Rotated ATSS (mmrotate ``rotated-atss-le90``): one horizontal anchor per location, adaptive
    training-sample selection on rotated IoU (no fixed IoU threshold, which thin rotated objects
    rarely reach with horizontal anchors), KLD loss on the decoded boxes, centre-ness."""
    return {
        "type": "mmrotate.RotatedATSSHead",
        **_common(spec, num_classes, in_channels),
        "anchor_generator": {
            "type": "mmrotate.FakeRotatedAnchorGenerator",
            "angle_version": ANGLE_VERSION,
            "octave_base_scale": spec.anchor_scale,
            "scales_per_octave": 1,
            "ratios": [1.0],
            "strides": list(strides),
        },
        "bbox_coder": {**_rbox_coder([1.0] * 5), "use_box_type": True},
        "loss_cls": dict(FOCAL_LOSS),
        # RotatedATSSHead applies its box loss to decoded boxes: a Gaussian loss (pure PyTorch;
        # the reference's rotated-IoU loss needs diff_iou_rotated, which has no CPU kernel), in
        # float32 (bf16 / fp16 have no CPU kernels for its 2x2 inverses)
        "loss_bbox": {"type": "Float32Loss", "loss": GAUSSIAN_BOX_LOSSES[spec.box_loss]},
        "loss_centerness": dict(CENTERNESS_LOSS),
        "train_cfg": _dense_train_cfg(
            {
                "type": "mmrotate.RotatedATSSAssigner",
                "topk": 9,
                "iou_calculator": {"type": "SparseRBboxOverlaps2D"},
            }
        ),
        "test_cfg": _rotated_test_cfg(spec),
    }


def oriented_rcnn_head(
    spec: Any, num_classes: int, in_channels: int, strides: Sequence[int]
) -> HeadCfg:
    """Oriented R-CNN (mmrotate ``oriented-rcnn-le90``, the paper's RGB / IR head): oriented RPN
    with midpoint-offset deltas, rotated RoIAlign on the first four levels, shared 2-fc box head.

    ``feat_channels`` is the RPN conv width, ``anchor_scale`` the RPN anchor scale (8 in the
    reference, whose P2 has stride 4), ``stacked_convs`` is unused (fixed 2-fc head, 1024 wide
    in the reference; here ``16 x feat_channels`` capped at 1024).
    """
    strides = list(strides)
    return {
        "type": "TwoStageHead",
        "rpn_head": {
            "type": "mmrotate.OrientedRPNHead",
            "in_channels": in_channels,
            "feat_channels": spec.feat_channels,
            "anchor_generator": {
                "type": "AnchorGenerator",
                "scales": [spec.anchor_scale],
                "ratios": [0.5, 1.0, 2.0],
                "strides": strides,
                "use_box_type": True,
            },
            "bbox_coder": {
                "type": "mmrotate.MidpointOffsetCoder",
                "angle_version": ANGLE_VERSION,
                "target_means": [0.0] * 6,
                "target_stds": [1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
            },
            "loss_cls": {"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 1.0},
            "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0 / 9.0, "loss_weight": 1.0},
        },
        "roi_head": {
            "type": "StandardRoIHead",
            "bbox_roi_extractor": {
                "type": "mmrotate.RotatedSingleRoIExtractor",
                "roi_layer": {
                    "type": "RoIAlignRotated",
                    "out_size": 7,
                    "sample_num": 2,
                    "clockwise": True,
                },
                "out_channels": in_channels,
                "featmap_strides": strides[:4],
            },
            "bbox_head": {
                "type": "Shared2FCBBoxHead",
                "predict_box_type": "rbox",
                "in_channels": in_channels,
                "fc_out_channels": min(1024, 16 * spec.feat_channels),
                "roi_feat_size": 7,
                "num_classes": num_classes,
                "reg_predictor_cfg": {"type": "Linear"},
                "cls_predictor_cfg": {"type": "Linear"},
                "bbox_coder": _rbox_coder([0.1, 0.1, 0.2, 0.2, 0.1]),
                "reg_class_agnostic": True,
                "loss_cls": {
                    "type": "CrossEntropyLoss",
                    "use_sigmoid": False,
                    "loss_weight": 1.0,
                },
                "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0, "loss_weight": 1.0},
            },
        },
        "train_cfg": {
            "rpn": {
                "assigner": {
                    "type": "MaxIoUAssigner",
                    "pos_iou_thr": 0.7,
                    "neg_iou_thr": 0.3,
                    "min_pos_iou": 0.3,
                    "match_low_quality": True,
                    "ignore_iof_thr": -1,
                    "iou_calculator": {"type": "mmrotate.RBbox2HBboxOverlaps2D"},
                },
                "sampler": {
                    "type": "RandomSampler",
                    "num": 256,
                    "pos_fraction": 0.5,
                    "neg_pos_ub": -1,
                    "add_gt_as_proposals": False,
                },
                "allowed_border": 0,
                "pos_weight": -1,
                "debug": False,
            },
            "rpn_proposal": {
                "nms_pre": 2000,
                "max_per_img": 2000,
                "nms": {"type": "nms", "iou_threshold": 0.8},
                "min_bbox_size": 0,
            },
            "rcnn": {
                "assigner": {
                    "type": "MaxIoUAssigner",
                    "pos_iou_thr": 0.5,
                    "neg_iou_thr": 0.5,
                    "min_pos_iou": 0.5,
                    "match_low_quality": False,
                    "iou_calculator": {"type": "SparseRBboxOverlaps2D"},
                    "ignore_iof_thr": -1,
                },
                "sampler": {
                    "type": "RandomSampler",
                    "num": 512,
                    "pos_fraction": 0.25,
                    "neg_pos_ub": -1,
                    "add_gt_as_proposals": True,
                },
                "pos_weight": -1,
                "debug": False,
            },
        },
        "test_cfg": {
            "rpn": {
                "nms_pre": 2000,
                "max_per_img": 2000,
                "nms": {"type": "nms", "iou_threshold": 0.8},
                "min_bbox_size": 0,
            },
            "rcnn": _rotated_test_cfg(spec, nms_pre=2000),
        },
    }


HeadBuilder = Callable[[Any, int, int, Sequence[int]], HeadCfg]

#: ``(head type, box type) -> builder``.
HEAD_BUILDERS: dict[tuple[str, str], HeadBuilder] = {
    ("gfl", "hbox"): gfl_head,
    ("retinanet", "hbox"): retina_head,
    ("fcos", "hbox"): fcos_head,
    ("atss", "hbox"): atss_head,
    ("retinanet", "obox"): rotated_retina_head,
    ("atss", "obox"): rotated_atss_head,
    ("oriented_rcnn", "obox"): oriented_rcnn_head,
}


def head_config(dataset_name: str, spec: Any, in_channels: int, strides: Sequence[int]) -> HeadCfg:
    """The mmdet config of ``dataset_name``'s head (its own classes, in dataset order)."""
    key = (spec.type, spec.box_type)
    if key not in HEAD_BUILDERS:
        known = ", ".join(f"{t}/{b}" for t, b in sorted(HEAD_BUILDERS))
        raise ValueError(f"finetune.heads.{dataset_name}: no head {key}; known: {known}")
    num_classes = len(DATASETS[dataset_name].classes)
    return HEAD_BUILDERS[key](spec, num_classes, in_channels, strides)
