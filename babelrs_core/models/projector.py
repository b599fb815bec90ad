"""The single shared projector: visual grid -> language-model embeddings (InternVL ``mlp1``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    """Optional pixel-unshuffle (s x s cells -> one token), LayerNorm, Linear, GELU, Linear.

    ``region`` builds the two region tokens of a box: its RoI-aligned ``s x s`` cells through the
    same layers, and a learned embedding of its size (zero-initialised, so it starts neutral).
    """

    def __init__(
        self, in_channels: int, out_dim: int, hidden: int | None = None, shuffle: int = 1
    ) -> None:
        super().__init__()
        self.shuffle = shuffle
        d = in_channels * shuffle * shuffle
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden or out_dim)
        self.fc2 = nn.Linear(hidden or out_dim, out_dim)
        self.box_embed = nn.Linear(box_feature_dim(), out_dim)
        nn.init.zeros_(self.box_embed.weight)
        nn.init.zeros_(self.box_embed.bias)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        return (grid[0] // self.shuffle) * (grid[1] // self.shuffle)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H*W / s^2, out_dim), tokens in row-major order."""
        if self.shuffle > 1:
            if fmap.shape[-1] % self.shuffle or fmap.shape[-2] % self.shuffle:
                raise ValueError(f"grid {tuple(fmap.shape[-2:])} not divisible by {self.shuffle}")
            fmap = F.pixel_unshuffle(fmap, self.shuffle)
        tokens = fmap.flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(self.fc1(self.norm(tokens))))

    def region(self, fmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) maps, (N, 4) boxes in 0..1 -> (N, 2, out_dim): feature and size tokens."""
        roi = roi_align(fmap, boxes, self.shuffle)
        size = self.box_embed(box_features(boxes).to(roi.dtype))
        return torch.stack([self.forward(roi)[:, 0], size], dim=1)


#: box geometry seen by the region token: size only (corners would let it memorise objects)
BOX_FEATURES = ("log_w", "log_h", "log_area", "log_aspect")
FOURIER_BANDS = 4


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """Size of (N, 4) boxes in 0..1 (x1 y1 x2 y2): log width, height, area and aspect, each
    mapped to about 0..1 and expanded in Fourier features (sin / cos of 2^k * pi * v)."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    lw, lh = w.log(), h.log()  # -6.9 .. 0
    v = torch.stack([lw / -7 + 1, lh / -7 + 1, (lw + lh) / -14 + 1, (lw - lh) / 14 + 0.5], 1)
    k = (2.0 ** torch.arange(FOURIER_BANDS, device=boxes.device, dtype=v.dtype)) * torch.pi
    ang = v[:, :, None] * k
    return torch.cat([v, ang.sin().flatten(1), ang.cos().flatten(1)], 1)


def box_feature_dim() -> int:
    return len(BOX_FEATURES) * (1 + 2 * FOURIER_BANDS)


def roi_align(fmap: torch.Tensor, boxes: torch.Tensor, size: int, samples: int = 2) -> torch.Tensor:
    """Average of bilinear samples in each of ``size x size`` bins of every box (RoIAlign).

    ``fmap`` (B, C, H, W); ``boxes`` (B, 4) as x1 y1 x2 y2 in 0..1 of the image, one per map.
    Returns (B, C, size, size), ready for :class:`Projector` with ``shuffle == size``.
    """
    n = size * samples
    steps = (torch.arange(n, device=fmap.device, dtype=fmap.dtype) + 0.5) / n
    x1, y1, x2, y2 = (boxes.to(fmap.dtype)[:, i, None] for i in range(4))
    xs = x1 + (x2 - x1) * steps  # (B, n)
    ys = y1 + (y2 - y1) * steps
    grid = (
        torch.stack([xs[:, None, :].expand(-1, n, -1), ys[:, :, None].expand(-1, -1, n)], dim=-1)
        * 2
        - 1
    )  # (B, n, n, 2) in grid_sample's [-1, 1] (align_corners=False)
    sampled = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(sampled, samples) if samples > 1 else sampled
