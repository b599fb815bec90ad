"""Our vision encoder as an mmdet backbone (registered in mmdet's ``MODELS`` registry).

``BabelRSBackbone`` wraps any :class:`~babelrs_core.models.encoders.VisionEncoder` and returns its
tap features as a tuple of NCHW maps, finest first, ready for mmdet's ``FPN``:

* CNN encoders (EfficientNet-Lite0): the taps are already multi-scale (strides 8 / 16 / 32).
* ViT encoders: all taps share the patch stride, so a *simple feature pyramid* (ViTDet) brings them
  to ``vit_strides`` (transposed convs up, identity, max-pool down). With as many taps as strides,
  tap ``i`` feeds stride ``i``; with one tap, that tap feeds every stride.

``init`` picks the starting weights: ``csia`` (the pretraining stage's output folder, read strictly
by :func:`~babelrs_core.models.encoders.load_pretrained_encoder`), ``imagenet`` (the encoder's
shipped weights, or ``weights`` for a local file) or ``scratch`` (random). A checkpointed detector
is rebuilt with ``init='scratch'`` and the same ``arch``, then its state dict is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeGuard, runtime_checkable

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from babelrs_core.models.encoders import (
    EncoderInfo,
    VisionEncoder,
    build_encoder,
    load_pretrained_encoder,
)


def build_start_encoder(
    encoder: str,
    init: str,
    pretrained_dir: str | Path | None = None,
    weights: str | Path | None = None,
    arch: dict[str, Any] | None = None,
    bn: str = "frozen",
) -> tuple[VisionEncoder, EncoderInfo | None]:
    """The encoder a detector starts from, and the pretraining's ``encoder.json`` (csia only)."""
    arch = dict(arch or {})
    info = None
    if init == "csia":
        if pretrained_dir is None:
            raise ValueError("finetune.init=csia needs the pretraining output folder")
        enc, info = load_pretrained_encoder(pretrained_dir)
        if info["encoder"] != encoder:
            raise ValueError(
                f"{pretrained_dir}: pretraining output holds encoder {info['encoder']!r}, but "
                f"model.encoder is {encoder!r}"
            )
    elif init == "imagenet":
        if encoder.startswith("vit_") and weights is None:
            raise ValueError(
                f"finetune.init=imagenet with {encoder}: no weights ship with the ViT family; set "
                "finetune.encoder_weights to a local safetensors file"
            )
        enc = build_encoder(encoder, pretrained=True, weights=weights, **_arch_kwargs(arch, bn))
    elif init == "scratch":
        enc = build_encoder(encoder, pretrained=False, **_arch_kwargs(arch, bn))
    else:
        raise ValueError(f"unknown init {init!r}; expected csia | imagenet | scratch")
    if isinstance(enc, _FrozenBN):
        enc.bn_frozen = bn == "frozen"
    return enc, info


def _arch_kwargs(arch: dict[str, Any], bn: str) -> dict[str, Any]:
    return {**arch, "bn": bn}


def freeze_encoder_layers(encoder: VisionEncoder, upto: int) -> int:
    """Stop gradients into hidden states ``0 .. upto`` (stem / patch embedding = 0, block k = k).

    Returns the number of frozen parameters. ``upto < 0`` freezes nothing.
    """
    if upto < 0:
        return 0
    from babelrs_core.detector.optim import encoder_layer_id

    count = 0
    for name, p in encoder.named_parameters():
        if encoder_layer_id(name, encoder.num_layers) <= upto:
            p.requires_grad_(False)
            count += p.numel()
    return count


@runtime_checkable
class _FrozenBN(Protocol):
    """An encoder with a BatchNorm switch (the CNNs); isinstance is ``hasattr(.., "bn_frozen")``."""

    bn_frozen: bool


@runtime_checkable
class _ChannelsLast(Protocol):
    """An encoder with an NHWC switch (the CNNs)."""

    channels_last: bool


class _PatchEncoder(Protocol):
    """A ViT: patch embeddings on a grid of stride ``patch``."""

    embeddings: nn.Module
    patch: int


def _is_vit(encoder: VisionEncoder) -> TypeGuard[_PatchEncoder]:
    return hasattr(encoder, "embeddings") and hasattr(encoder, "patch")


class SimpleFeaturePyramid(nn.Module):
    """ViTDet-style pyramid: each tap (all at the patch stride) resampled to one output stride."""

    def __init__(self, channels: int, patch: int, strides: Sequence[int], n_taps: int) -> None:
        super().__init__()
        if n_taps not in (1, len(strides)):
            raise ValueError(
                f"simple feature pyramid: {n_taps} taps for {len(strides)} strides; give one tap "
                "or as many taps as vit_strides"
            )
        self.strides = list(strides)
        self.n_taps = n_taps
        self.stages = nn.ModuleList(self._stage(channels, patch, s) for s in strides)

    @staticmethod
    def _stage(c: int, patch: int, stride: int) -> nn.Module:
        ratio = patch / stride
        layers: list[nn.Module] = []
        if ratio >= 2:
            for _ in range(round(math.log2(ratio))):
                layers += [nn.ConvTranspose2d(c, c, 2, 2), nn.GELU()]
            layers = layers[:-1]
        elif ratio <= 0.5:
            for _ in range(round(math.log2(1 / ratio))):
                layers.append(nn.MaxPool2d(2, 2))
        return nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, taps: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        outs = []
        for i, (stage, stride) in enumerate(zip(self.stages, self.strides, strict=True)):
            y = stage(taps[i if self.n_taps > 1 else 0])
            want = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
            if tuple(y.shape[-2:]) != want:
                y = F.interpolate(y, size=want, mode="bilinear", align_corners=False)
            outs.append(y)
        return outs


@MODELS.register_module()
class BabelRSBackbone(BaseModule):
    """A babelrs vision encoder as an mmdet backbone; ``forward`` returns a tuple of NCHW maps."""

    def __init__(
        self,
        encoder: str = "efficientnet_lite0",
        init: str = "scratch",
        pretrained_dir: str | None = None,
        weights: str | None = None,
        arch: dict[str, Any] | None = None,
        layers: Sequence[int] | None = None,
        vit_strides: Sequence[int] = (8, 16, 32),
        bn: str = "frozen",
        frozen_layers: int = -1,
        channels_last: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.channels_last = bool(channels_last)
        self.encoder, self.pretrain_info = build_start_encoder(
            encoder, init, pretrained_dir, weights, arch, bn
        )
        self.encoder_name = encoder
        self.layers = self.encoder.resolve_layers(layers)
        taps = [self.encoder.tap_info(k) for k in self.layers]
        self.is_vit = _is_vit(self.encoder)
        self.pyramid: SimpleFeaturePyramid | None
        if _is_vit(self.encoder):
            self.pyramid = SimpleFeaturePyramid(
                taps[0].channels, self.encoder.patch, vit_strides, len(taps)
            )
            self.out_channels = [taps[0].channels] * len(vit_strides)
            self.out_strides = list(vit_strides)
        else:
            self.pyramid = None
            self.out_channels = [t.channels for t in taps]
            self.out_strides = [t.stride for t in taps]
        self.frozen_layers = int(frozen_layers)
        freeze_encoder_layers(self.encoder, self.frozen_layers)
        if isinstance(self.encoder, _ChannelsLast):  # CNN encoders (efficientnet_lite.py)
            self.encoder.channels_last = self.channels_last

    @property
    def arch(self) -> dict[str, Any]:
        """Kwargs that rebuild this encoder's architecture (stored in ``detector.json``)."""
        return dict(self.encoder.arch_kwargs)

    def init_weights(self) -> None:
        # the encoder's weights come from ``init``; mmengine's initialisers must not touch them
        if self.pyramid is not None:
            for m in self.pyramid.modules():
                if isinstance(m, nn.ConvTranspose2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                    assert m.bias is not None  # built with bias=True
                    nn.init.zeros_(m.bias)
        self._is_init = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.encoder.forward_taps(x, self.layers)
        if self.pyramid is not None:
            feats = self.pyramid(feats, (x.shape[-2], x.shape[-1]))
        return tuple(feats)
