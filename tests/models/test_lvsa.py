"""LVSA: alpha(t), the blend at t = 0 and t >= tau, the CNN tap adapters, the merge modes."""

from __future__ import annotations

import pytest
import torch

from babelrs_core.models.encoders import TapInfo
from babelrs_core.models.lvsa import TapFusion, alpha, blend
from babelrs_core.models.projector import Projector

torch.set_num_threads(1)
CNN_TAPS = [TapInfo(5, 40, 8), TapInfo(11, 112, 16), TapInfo(16, 320, 32)]


def cnn_feats(n: int = 2, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(n, t.channels, size // t.stride, size // t.stride, generator=g)
        for t in CNN_TAPS
    ]


def test_alpha_schedule() -> None:
    assert alpha(0, 90) == 0.0
    assert alpha(45, 90) == 0.5
    assert alpha(90, 90) == 1.0 and alpha(1000, 90) == 1.0
    assert alpha(0, 0) == 1.0  # tau = 0: abrupt multi-layer mean from the start


def test_blend_at_zero_is_last_tap_and_at_tau_is_the_mean() -> None:
    fusion = TapFusion(CNN_TAPS, "lvsa", grid=4)
    feats = cnn_feats()
    common = fusion.common(feats)
    assert all(f.shape == (2, 320, 4, 4) for f in common)
    torch.testing.assert_close(fusion(feats, step=0, tau=90), common[-1])
    mean = torch.stack(common).mean(0)
    torch.testing.assert_close(fusion(feats, step=90, tau=90), mean)
    torch.testing.assert_close(fusion(feats, step=500, tau=90), mean)
    half = fusion(feats, step=45, tau=90)
    torch.testing.assert_close(half, 0.5 * common[-1] + 0.5 * mean)
    # weight of the last tap is (1 - a) + a / N, of the others a / N (reference code's form)
    a, n = 0.5, 3
    torch.testing.assert_close(
        half, ((1 - a) + a / n) * common[-1] + (a / n) * (common[0] + common[1])
    )


def test_same_shape_taps_are_used_as_is() -> None:
    taps = [TapInfo(k, 192, 16) for k in (3, 9, 12)]
    fusion = TapFusion(taps, "lvsa", grid=4)
    assert fusion.adapters is None and fusion.grid is None
    feats = [torch.randn(1, 192, 8, 8) for _ in taps]
    assert torch.equal(fusion(feats, 0, 10), feats[-1])
    torch.testing.assert_close(fusion(feats, 10, 10), blend(feats, 1.0))


@pytest.mark.parametrize(("mode", "channels"), [("last", 320), ("sum", 320), ("concat", 960)])
def test_ablation_modes(mode: str, channels: int) -> None:
    fusion = TapFusion(CNN_TAPS, mode, grid=4)
    assert fusion.out_channels == channels
    out = fusion(cnn_feats(), step=3, tau=10)
    assert out.shape == (2, channels, 4, 4)
    if mode == "sum":
        torch.testing.assert_close(out, torch.stack(fusion.common(cnn_feats())).sum(0))


def test_unknown_mode_and_width_option() -> None:
    with pytest.raises(ValueError, match="allowed: last, lvsa, concat, sum"):
        TapFusion(CNN_TAPS, "mean")
    fusion = TapFusion(CNN_TAPS, "lvsa", grid=2, width=64)
    assert fusion(cnn_feats(), 0, 5).shape == (2, 64, 2, 2)


def test_projector_tokens_and_pixel_shuffle() -> None:
    proj = Projector(320, 48, shuffle=2)
    tokens = proj(torch.randn(3, 320, 8, 8))
    assert tokens.shape == (3, 16, 48) and proj.num_tokens((8, 8)) == 16
    with pytest.raises(ValueError, match="not divisible"):
        proj(torch.randn(1, 320, 5, 5))
