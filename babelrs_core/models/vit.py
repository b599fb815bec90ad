"""Plain ViT family (tiny / small / base / large) laid out like InternViT, for GPU users.

``vit_large`` has InternViT-300M's layout (24 blocks, width 1024, 16 heads, patch 14, 448 px, layer
scale) and its parameter names (``embeddings.*``, ``encoder.layers.N.*``), so a local safetensors
export of InternViT-300M (or of BabelRS's released ViT) loads after stripping ``vision_model.``.
Hidden states: 0 = patch embedding (+ position), k = output of block k (1-based); taps are returned
as NCHW grids without the CLS token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from babelrs_core.models.encoders import TapInfo, VisionEncoder, register_encoder

VIT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"width": 192, "depth": 12, "heads": 3, "patch": 16, "image_size": 224},
    "small": {"width": 384, "depth": 12, "heads": 6, "patch": 16, "image_size": 224},
    "base": {"width": 768, "depth": 12, "heads": 12, "patch": 16, "image_size": 224},
    "large": {
        "width": 1024,
        "depth": 24,
        "heads": 16,
        "patch": 14,
        "image_size": 448,
        "layer_scale_init": 0.1,
    },
}

#: default taps: the paper's 3rd / 9th / 18th / last of 24, scaled to 12-block models
VIT_DEFAULT_LAYERS: dict[int, list[int]] = {24: [3, 9, 18, 24], 12: [2, 5, 9, 12]}


class Embeddings(nn.Module):
    """Patch embedding, CLS token and learned position embedding (interpolated to any grid)."""

    def __init__(self, width: int, patch: int, image_size: int) -> None:
        super().__init__()
        self.patch = patch
        self.grid = image_size // patch
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, width))
        self.patch_embedding = nn.Conv2d(3, width, patch, patch)
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + self.grid**2, width))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        nn.init.trunc_normal_(self.class_embedding, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch_embedding(x)
        hw = (p.shape[2], p.shape[3])
        tokens = p.flatten(2).transpose(1, 2)
        pos = self.position_embedding
        cls_pos, grid_pos = pos[:, :1], pos[:, 1:]
        if hw != (self.grid, self.grid):
            grid_pos = resize_grid(grid_pos, (self.grid, self.grid), hw)
        cls = self.class_embedding.expand(x.shape[0], -1, -1) + cls_pos
        return torch.cat([cls, tokens + grid_pos], dim=1), hw


def resize_grid(pos: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize (1, h*w, C) position embeddings from grid ``src`` to ``dst``."""
    c = pos.shape[-1]
    g = pos.reshape(1, src[0], src[1], c).permute(0, 3, 1, 2)
    g = F.interpolate(g.float(), size=dst, mode="bicubic", align_corners=False).to(pos.dtype)
    return g.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], c)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (InternViT names: norm1/attn/ls1/...)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, ls_init: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.ls1 = nn.Parameter(torch.full((width,), ls_init))
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.ls2 = nn.Parameter(torch.full((width,), ls_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class Encoder(nn.Module):
    def __init__(self, layers: list[Block]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class ViT(VisionEncoder):
    """A ViT whose hidden states are tapped as (N, width, H/patch, W/patch) grids."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        patch: int,
        image_size: int,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.arch_kwargs = {
            "width": width,
            "depth": depth,
            "heads": heads,
            "patch": patch,
            "image_size": image_size,
            "mlp_ratio": mlp_ratio,
            "layer_scale_init": layer_scale_init,
        }
        self.width, self.patch = width, patch
        self.num_layers = depth
        self.embeddings = Embeddings(width, patch, image_size)
        self.encoder = Encoder(
            [Block(width, heads, mlp_ratio, layer_scale_init) for _ in range(depth)]
        )

    def default_layers(self) -> list[int]:
        if self.num_layers in VIT_DEFAULT_LAYERS:
            return list(VIT_DEFAULT_LAYERS[self.num_layers])
        d = self.num_layers
        return sorted({max(1, round(d * f)) for f in (0.125, 0.375, 0.75)} | {d})

    def tap_info(self, layer: int) -> TapInfo:
        (k,) = self.resolve_layers([layer])
        return TapInfo(k, self.width, self.patch)

    def forward_taps(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        want = self.resolve_layers(layers)
        h, (gh, gw) = self.embeddings(x)
        out: dict[int, torch.Tensor] = {0: h} if 0 in want else {}
        for i, block in enumerate(self.encoder.layers[: max(want)], start=1):
            h = block(h)
            if i in want:
                out[i] = h
        return [out[k][:, 1:].transpose(1, 2).reshape(x.shape[0], self.width, gh, gw) for k in want]


def load_vit_weights(vit: ViT, path: Path) -> None:
    """Load a local safetensors file strictly (``vision_model.`` prefixes stripped; position
    embeddings resized when the checkpoint's grid differs)."""
    from safetensors.torch import load_file

    try:
        raw = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: unreadable safetensors file ({exc})") from exc
    state = {}
    for key, value in raw.items():
        for prefix in ("model.vision_model.", "vision_model.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key.startswith(("embeddings.", "encoder.")):
            state[key] = value
    pos_key = "embeddings.position_embedding"
    if pos_key in state and state[pos_key].shape != vit.embeddings.position_embedding.shape:
        pos = state[pos_key]
        src = round((pos.shape[1] - 1) ** 0.5)
        g = vit.embeddings.grid
        state[pos_key] = torch.cat([pos[:, :1], resize_grid(pos[:, 1:], (src, src), (g, g))], 1)
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not match the {vit.num_layers}-block, width-{vit.width} ViT layout; "
            f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}"
        )


def _factory(size: str):
    def make(pretrained: bool = True, weights: Path | None = None, **kwargs: Any) -> ViT:
        kwargs.pop("bn", None)
        arch = {**VIT_SIZES[size], **kwargs}
        vit = ViT(**arch)
        if weights is not None:
            load_vit_weights(vit, weights)
        return vit

    make.__doc__ = f"ViT-{size}: random init unless a local safetensors ``weights`` file is given."
    return make


for _size in VIT_SIZES:
    register_encoder(f"vit_{_size}")(_factory(_size))
