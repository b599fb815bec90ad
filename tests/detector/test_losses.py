"""The oriented heads' Gaussian box losses: what each rewards when the centre is off."""

from __future__ import annotations

import pytest
import torch
from mmdet.registry import MODELS

from babelrs_core.detector.config import register_all
from babelrs_core.detector.heads import GAUSSIAN_BOX_LOSSES

register_all()

# a thin 40 x 8 px vehicle at angle 0.3 rad; predictions share its centre line, long side and
# angle but sit 3 px off across it, with short sides from 4 to 40 px
TARGET = torch.tensor([[100.0, 100.0, 40.0, 8.0, 0.3]])
SHORT = torch.linspace(4.0, 40.0, 145)


def _best_short_side(loss_type: str, offset: float) -> float:
    loss = MODELS.build(GAUSSIAN_BOX_LOSSES[loss_type])
    dx, dy = -offset * torch.sin(TARGET[0, 4]), offset * torch.cos(TARGET[0, 4])
    preds = TARGET.repeat(len(SHORT), 1)
    preds[:, 0] += dx
    preds[:, 1] += dy
    preds[:, 3] = SHORT
    values = loss(preds, TARGET.repeat(len(SHORT), 1), reduction_override="none")
    return float(SHORT[int(values.argmin())])


def test_mmrotate_kld_rewards_a_wider_box_when_the_centre_is_off() -> None:
    assert _best_short_side("kld", 0.0) == pytest.approx(8.0, abs=0.3)
    # hedging: 3 px off, the loss is lowest for a box 25 % wider; 5 px off, 60 % wider
    assert _best_short_side("kld", 3.0) >= 9.75
    assert _best_short_side("kld", 5.0) >= 12.5


def test_prediction_kld_keeps_the_true_shape_whatever_the_centre_error() -> None:
    for offset in (0.0, 1.0, 3.0, 5.0):
        assert _best_short_side("rkld", offset) == pytest.approx(8.0, abs=0.3), offset


def test_gwd_hedges_less_than_kld() -> None:
    assert _best_short_side("gwd", 0.0) == pytest.approx(8.0, abs=0.3)
    assert 8.0 < _best_short_side("gwd", 5.0) < _best_short_side("kld", 5.0)


def test_prediction_kld_has_gradients_and_a_zero_for_no_positives() -> None:
    loss = MODELS.build(GAUSSIAN_BOX_LOSSES["rkld"])
    pred = (TARGET + torch.tensor([[2.0, -1.0, 5.0, 3.0, 0.2]])).requires_grad_()
    value = loss(pred, TARGET, weight=torch.ones(1), avg_factor=1.0)
    value.backward()
    assert value.item() > 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    zero = loss(pred, TARGET, weight=torch.zeros(1), avg_factor=1.0)
    assert zero.item() == 0.0 and zero.requires_grad


def test_focal_loss_runs_in_float32_under_bf16_autocast() -> None:
    """mmcv's CUDA focal-loss kernel has no bf16 (seen on an H200): the heads' focal loss is
    computed in float32 whatever the autocast dtype, with the value of mmdet's on float32."""
    from babelrs_core.detector.heads import FOCAL_LOSS

    ours, plain = MODELS.build(FOCAL_LOSS), MODELS.build({**FOCAL_LOSS, "type": "FocalLoss"})
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g)
    labels = torch.randint(0, 6, (64,), generator=g)  # 5 = background
    weight = torch.rand(64, generator=g)
    expected = plain(logits, labels, weight, avg_factor=10.0)
    pred = logits.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ours(pred, labels, weight.to(torch.bfloat16), avg_factor=10.0)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=1e-2)  # inputs rounded to bf16, loss in float32
    got.backward()
    assert pred.grad is not None and pred.grad.dtype == torch.bfloat16
    assert torch.isfinite(pred.grad.float()).all()
