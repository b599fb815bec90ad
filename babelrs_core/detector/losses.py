"""Loss wrappers for the oriented heads."""

from __future__ import annotations

from typing import Any

import torch
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class Float32Loss(nn.Module):
    """Runs the wrapped loss in float32 outside autocast.

    mmrotate's Gaussian (KLD) box loss needs determinants and inverses of 2x2 covariances, which
    have no CPU kernel in bf16 / fp16 (``precision: bf16 | fp16``) and lose accuracy there anyway.
    """

    def __init__(self, loss: dict) -> None:
        super().__init__()
        self.loss = MODELS.build(loss)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        def f32(x: Any) -> Any:
            return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

        with torch.autocast(pred.device.type, enabled=False):
            return self.loss(
                f32(pred), f32(target), *[f32(a) for a in args],
                **{k: f32(v) for k, v in kwargs.items()},
            )  # fmt: skip
