"""Loss wrappers: float32 islands under autocast, and the oriented heads' box losses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from torch import nn


def in_float32(fn: Callable[..., Any], pred: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """``fn(pred, *args, **kwargs)`` outside autocast with every floating tensor in float32
    (integer tensors such as class labels pass as they are)."""

    def f32(x: Any) -> Any:
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    with torch.autocast(pred.device.type, enabled=False):
        return fn(f32(pred), *[f32(a) for a in args], **{k: f32(v) for k, v in kwargs.items()})


@MODELS.register_module()
class Float32FocalLoss(FocalLoss):
    """mmdet's sigmoid focal loss (same config keys) computed in float32 outside autocast.

    On CUDA mmdet calls mmcv's ``sigmoid_focal_loss`` kernel, which has no bfloat16 version:
    ``precision: bf16`` failed at the first step of the oriented heads on an H200
    ("sigmoid_focal_loss_forward_cuda_kernel" not implemented for 'BFloat16',
    docs/benchmarks.md "GPU check"). The loss's exp / log on a few thousand logits cost nothing
    in float32; the heads' convolutions keep running in the autocast dtype.
    """

    def forward(self, pred: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return in_float32(super().forward, pred, *args, **kwargs)


@MODELS.register_module()
class Float32Loss(nn.Module):
    """Runs the wrapped loss in float32 outside autocast.

    mmrotate's Gaussian (KLD) box loss needs determinants and inverses of 2x2 covariances, which
    have no CPU kernel in bf16 / fp16 (``precision: bf16 | fp16``) and lose accuracy there anyway.
    """

    def __init__(self, loss: dict) -> None:
        super().__init__()
        self.loss = MODELS.build(loss)

    def forward(self, pred: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return in_float32(self.loss, pred, *args, **kwargs)


def _no_positive(weight: torch.Tensor | None, reduction: str) -> bool:
    """True when a reduced box loss has no positive sample (every weight 0): the loss is zero."""
    return weight is not None and not torch.any(weight > 0) and reduction != "none"


@dataclass(frozen=True)
class BoxLossCall:
    """The arguments of one mmdet box-loss call (``loss_bbox(pred, target, weight, ...)``)."""

    pred: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None
    avg_factor: float | None
    reduction_override: str | None
    kwargs: dict[str, Any]


class _BoxLoss(nn.Module):
    """A box loss in mmdet's calling convention that is zero (still in the graph) when a reduced
    loss has no positive sample; otherwise :meth:`positive` computes it."""

    reduction = "mean"

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if _no_positive(weight, reduction_override or self.reduction):
            return (pred * 0).sum()  # zero, still in the graph
        return self.positive(
            BoxLossCall(pred, target, weight, avg_factor, reduction_override, kwargs)
        )

    def positive(self, call: BoxLossCall) -> torch.Tensor:
        """The loss of a call with at least one positive sample (or an unreduced one)."""
        raise NotImplementedError


@MODELS.register_module()
class PredictionKLDLoss(_BoxLoss):
    """KL(pred || target) between the boxes' Gaussians: mmrotate's KLD loss (``GDLoss``,
    ``loss_type='kld'``) with the two boxes' roles swapped.

    mmrotate's KLD is KL(target || pred): its centre term is ``dμᵀ Σ_pred⁻¹ dμ``, so a prediction
    whose centre is uncertain lowers its loss by *widening* itself, most of all across a thin
    object (on held-out SOI-mini images the rotated ATSS heads predicted DroneVehicle boxes 2.7x
    too wide and near-square; docs/detector.md). Here the centre error is measured in the target's
    own covariance and the shape term ``tr(Σ_t⁻¹ Σ_p) + ln(det Σ_t / det Σ_p)`` is smallest at
    ``Σ_p = Σ_t`` whatever the centre error: no reward for hedging. Same post-processing
    (``fun``, ``tau``) and reduction as mmrotate's loss.
    """

    def __init__(self, fun: str = "log1p", tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.inner = MODELS.build(
            {
                "type": "mmrotate.GDLoss",
                "loss_type": "kld",
                "fun": fun,
                "tau": tau,
                "loss_weight": loss_weight,
            }
        )

    def positive(self, call: BoxLossCall) -> torch.Tensor:
        return self.inner(
            call.target,
            call.pred,
            weight=call.weight,
            avg_factor=call.avg_factor,
            reduction_override=call.reduction_override,
            **call.kwargs,
        )


@MODELS.register_module()
class ModulatedRotatedL1Loss(_BoxLoss):
    """L1 on target-normalised rotated-box offsets, minimised over the two equivalent target
    representations ``(w, h, θ)`` and ``(h, w, θ + π/2)`` (the modulated rotation loss of RSDet,
    Qian et al., AAAI 2021), on decoded boxes as rotated ATSS gives them.

    Per positive: ``|u / w_t| + |v / h_t|`` (the centre error ``(u, v)`` in the target's own frame)
    ``+ |ln(w_p / w_t)| + |ln(h_p / h_t)| + |Δθ|`` (``Δθ`` wrapped to ``[-π/2, π/2)``), taking the
    smaller of the two representations. Unlike a Gaussian loss it has an angle gradient while the
    prediction is still square (a Gaussian of a square box has no orientation), and no reward for
    widening a box whose centre is uncertain.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight, self.reduction = loss_weight, reduction

    def positive(self, call: BoxLossCall) -> torch.Tensor:
        from mmdet.models.losses.utils import weight_reduce_loss

        reduction = call.reduction_override or self.reduction
        weight = call.weight
        pred, target = call.pred.reshape(-1, 5), call.target.reshape(-1, 5)
        wt, ht = target[:, 2].clamp(min=1e-3), target[:, 3].clamp(min=1e-3)
        wp, hp = pred[:, 2].clamp(min=1e-3), pred[:, 3].clamp(min=1e-3)
        cos, sin = torch.cos(target[:, 4]), torch.sin(target[:, 4])
        dx, dy = pred[:, 0] - target[:, 0], pred[:, 1] - target[:, 1]
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        centre = (u / wt).abs() + (v / ht).abs()
        half = torch.pi / 2

        def wrap(a: torch.Tensor) -> torch.Tensor:
            return torch.remainder(a + half, torch.pi) - half

        dtheta = pred[:, 4] - target[:, 4]
        same = (wp / wt).log().abs() + (hp / ht).log().abs() + wrap(dtheta).abs()
        swapped = (wp / ht).log().abs() + (hp / wt).log().abs() + wrap(dtheta - half).abs()
        loss = centre + torch.minimum(same, swapped)
        if weight is not None:
            weight = weight.reshape(-1).float()
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, call.avg_factor)
