"""A two-stage detector's RPN + RoI head as one per-dataset "head" of the multi-head detector.

:class:`TwoStageHead` does what mmdet's ``TwoStageDetector.loss`` / ``predict`` do after the
features are extracted (class-agnostic RPN targets, proposals into the RoI head, ``rpn_``-prefixed
RPN losses), so Oriented R-CNN (mmrotate) can sit beside dense heads on the shared FPN.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.model import BaseModule


@MODELS.register_module()
class TwoStageHead(BaseModule):
    """``rpn_head`` + ``roi_head`` with their ``train_cfg`` / ``test_cfg`` (``rpn``,
    ``rpn_proposal``, ``rcnn`` keys as in an mmdet two-stage config)."""

    def __init__(
        self,
        rpn_head: dict,
        roi_head: dict,
        train_cfg: dict | None = None,
        test_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        train_cfg = ConfigDict(train_cfg or {})
        test_cfg = ConfigDict(test_cfg or {})
        rpn = copy.deepcopy(rpn_head)
        rpn.update(train_cfg=train_cfg.get("rpn"), test_cfg=test_cfg.get("rpn"))
        rpn.setdefault("num_classes", 1)
        self.rpn_head = MODELS.build(rpn)
        roi = copy.deepcopy(roi_head)
        roi.update(train_cfg=train_cfg.get("rcnn"), test_cfg=test_cfg.get("rcnn"))
        self.roi_head = MODELS.build(roi)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def loss(self, feats: tuple[torch.Tensor, ...], samples: list) -> dict[str, Any]:
        proposal_cfg = self.train_cfg.get("rpn_proposal", self.test_cfg.get("rpn"))
        rpn_samples = copy.deepcopy(samples)
        for s in rpn_samples:  # the RPN is class-agnostic
            s.gt_instances.labels = torch.zeros_like(s.gt_instances.labels)
        rpn_losses, proposals = self.rpn_head.loss_and_predict(
            feats, rpn_samples, proposal_cfg=proposal_cfg
        )
        losses = {
            (f"rpn_{k}" if "loss" in k and "rpn" not in k else k): v for k, v in rpn_losses.items()
        }
        losses.update(self.roi_head.loss(_nchw(feats), proposals, samples))
        return losses

    def predict(self, feats: tuple[torch.Tensor, ...], samples: list, rescale: bool = True) -> list:
        proposals = self.rpn_head.predict(feats, samples, rescale=False)
        return self.roi_head.predict(_nchw(feats), proposals, samples, rescale=rescale)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> Any:
        return self.rpn_head.forward(feats)


def _nchw(feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """mmcv's RoI ops (``RoIAlignRotated``, ``RoIAlign``) index the raw buffer as NCHW and give
    wrong features for channels-last maps without an error (finetune.channels_last): hand them
    NCHW copies (``tests/detector/test_oriented.py`` checks both layouts predict the same)."""
    return tuple(f.contiguous() for f in feats)
