"""LVSA: Layerwise Visual-Semantic Annealing of tap features (docs/method.md §2).

``F = (1 - alpha(t)) * F_last + alpha(t) * mean(F_taps)`` with ``alpha(t) = min(t / tau, 1)`` in
optimizer steps. Modes ``last`` / ``concat`` / ``sum`` keep the paper's merge ablation runnable.

Deviation for CNN encoders (taps of different widths and strides): each tap first goes through its
own 1x1 convolution to a common width and is resized to a common ``grid x grid`` (average pooling
when larger, bilinear when smaller). Taps that already share one shape (ViT) are used as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from babelrs_core.models.encoders import TapInfo

MODES = ("last", "lvsa", "concat", "sum")


def alpha(step: int, tau: int) -> float:
    """Annealing coefficient ``min(step / tau, 1)``; ``tau = 0`` means multi-layer from step 0."""
    if tau <= 0:
        return 1.0
    return min(max(step, 0) / tau, 1.0)


def blend(feats: Sequence[torch.Tensor], a: float) -> torch.Tensor:
    """``(1 - a) * feats[-1] + a * mean(feats)``; the last entry is F_last."""
    last = feats[-1]
    if a == 0.0:
        return last
    mean = torch.stack(list(feats), 0).mean(0)
    return mean if a == 1.0 else (1.0 - a) * last + a * mean


class TapFusion(nn.Module):
    """Bring taps to one shape (CNNs only) and merge them by ``mode``."""

    def __init__(
        self, taps: Sequence[TapInfo], mode: str = "lvsa", grid: int = 4, width: int | None = None
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"lvsa.mode {mode!r} unknown; allowed: {', '.join(MODES)}")
        self.mode = mode
        self.taps = list(taps)
        same = len({(t.channels, t.stride) for t in self.taps}) == 1
        self.adapt = not same or width is not None
        self.width = width or self.taps[-1].channels
        self.grid = grid if self.adapt else None
        self.adapters = (
            nn.ModuleList(
                nn.Identity() if t.channels == self.width else nn.Conv2d(t.channels, self.width, 1)
                for t in self.taps
            )
            if self.adapt
            else None
        )

    @property
    def out_channels(self) -> int:
        return self.width * len(self.taps) if self.mode == "concat" else self.width

    def common(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Taps at the common width and grid (unchanged for same-shape taps)."""
        if not self.adapt:
            return list(feats)
        adapters, g = self.adapters, self.grid
        assert adapters is not None and g is not None  # both set when adapt
        out = []
        for f, adapter in zip(feats, adapters, strict=True):
            f = adapter(f)
            if f.shape[-2] > g or f.shape[-1] > g:
                f = F.adaptive_avg_pool2d(f, g)
            if f.shape[-2] < g or f.shape[-1] < g:
                f = F.interpolate(f, size=(g, g), mode="bilinear", align_corners=False)
            out.append(f)
        return out

    def forward(self, feats: Sequence[torch.Tensor], step: int, tau: int) -> torch.Tensor:
        feats = self.common(feats)
        if self.mode == "last":
            return feats[-1]
        if self.mode == "lvsa":
            return blend(feats, alpha(step, tau))
        if self.mode == "sum":
            return torch.stack(feats, 0).sum(0)
        return torch.cat(feats, dim=1)
