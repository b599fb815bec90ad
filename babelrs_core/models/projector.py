"""The single shared projector: visual grid -> language-model embeddings (InternVL ``mlp1``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    """Optional pixel-unshuffle (s x s cells -> one token), LayerNorm, Linear, GELU, Linear.

    ``region`` builds a region token: the RoI-aligned ``s x s`` cells through the same layers,
    plus a learned embedding of the box geometry (zero-initialised, so it starts neutral).
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
        self.box_embed = nn.Linear(len(BOX_FEATURES), out_dim)
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
        """One token per box: (N, C, H, W) maps and (N, 4) boxes in 0..1 -> (N, out_dim)."""
        roi = roi_align(fmap, boxes, self.shuffle)
        return self.forward(roi)[:, 0] + self.box_embed(box_features(boxes).to(roi.dtype))


#: box geometry seen by the region token: size only (corners would let it memorise objects)
BOX_FEATURES = ("w", "h", "log_w", "log_h")


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """Size of (N, 4) boxes in 0..1 (x1 y1 x2 y2): width, height and their logs."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    return torch.stack([w, h, w.log(), h.log()], 1)


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
