"""The vision-encoder registry and the "features at tap layers" interface every encoder exposes.

Layer-index convention (docs/pretraining.md): a tap index names a *hidden state*, as in Hugging
Face's ``hidden_states`` and the reference code's ``vision_select_layer``: ``0`` is the stem / patch
embedding output and ``k`` is the output of block ``k`` counted from 1. Negative indices count from
the end (``-1`` is the last block). The paper's "3rd, 9th, 18th and last" blocks of ViT-L are
therefore ``[3, 9, 18, 24]``; the released BabelRS weights were trained with ``[2, 8, 17, 23]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
from torch import nn


@dataclass(frozen=True)
class TapInfo:
    """Shape facts of one hidden state: channels and stride (pixels per feature cell)."""

    layer: int
    channels: int
    stride: int


class VisionEncoder(nn.Module):
    """Base class: ``forward_taps(x, layers)`` returns NCHW features at the requested layers."""

    #: registry name, set by :func:`register_encoder`
    name: str = ""
    #: number of blocks (hidden states are ``0 .. num_layers``)
    num_layers: int = 0
    #: kwargs that rebuild this exact architecture with :func:`build_encoder`
    arch_kwargs: dict[str, Any]

    def default_layers(self) -> list[int]:
        """The taps used when params give none."""
        raise NotImplementedError

    def tap_info(self, layer: int) -> TapInfo:
        """Channels and stride of hidden state ``layer`` (negative indices allowed)."""
        raise NotImplementedError

    def forward_taps(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Features (N, C, H, W) at each of ``layers`` for images ``x`` (N, 3, H, W)."""
        raise NotImplementedError

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Absolute, checked layer indices (negatives counted from the end), order kept."""
        layers = list(self.default_layers() if layers is None else layers)
        if not layers:
            raise ValueError(f"{self.name}: at least one tap layer is needed")
        out = []
        for layer in layers:
            k = layer + self.num_layers + 1 if layer < 0 else layer
            if not 0 <= k <= self.num_layers:
                raise ValueError(
                    f"{self.name}: tap layer {layer} out of range; hidden states are 0 (stem) .. "
                    f"{self.num_layers} (last block), or -1 .. -{self.num_layers + 1}"
                )
            out.append(k)
        if len(set(out)) != len(out):
            raise ValueError(f"{self.name}: duplicate tap layers {layers}")
        return out


_REGISTRY: dict[str, Callable[..., VisionEncoder]] = {}


def register_encoder(
    name: str,
) -> Callable[[Callable[..., VisionEncoder]], Callable[..., VisionEncoder]]:
    """Decorator: register a factory ``f(pretrained: bool, weights: Path | None, **kw)``."""

    def wrap(factory: Callable[..., VisionEncoder]) -> Callable[..., VisionEncoder]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def encoder_names() -> list[str]:
    """Registered encoder names."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def build_encoder(
    name: str,
    pretrained: bool = True,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> VisionEncoder:
    """Build encoder ``name``; ``pretrained`` loads its shipped weights, ``weights`` a file."""
    _ensure_loaded()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    enc = factory(pretrained=pretrained, weights=Path(weights) if weights else None, **kwargs)
    enc.name = name
    return enc


def _ensure_loaded() -> None:
    # importing the modules runs their @register_encoder decorators
    from babelrs_core.models import efficientnet_lite, vit  # noqa: F401


ENCODER_JSON_FORMAT = "babelrs-encoder/1"


class NormStats(TypedDict):
    """Per-channel mean and std of one modality's pixels (0..255 scale)."""

    mean: list[float]
    std: list[float]


class TapRecord(TypedDict):
    """One encoder depth the projector reads: hidden-state index, width, stride."""

    layer: int
    channels: int
    stride: int


class LvsaRecord(TypedDict):
    """How the pretraining blended the encoder depths (``pretrain.lvsa``)."""

    mode: str
    layers: list[int]
    tau: int
    grid: int | None
    width: int | None


class EncoderInfo(TypedDict):
    """``encoder.json``: the pretrained encoder's description, what the detector's ``csia`` start
    loads (architecture, weights and their sha256, taps, input normalisation, LVSA settings)."""

    format: str
    encoder: str
    arch: dict[str, Any]  # keyword arguments of the encoder's constructor
    weights: str
    sha256: str
    num_layers: int
    layer_index: str
    taps: list[TapRecord]
    image_size: int
    input: dict[str, Any]  # channels and how pixels are normalised, for people
    normalization: dict[str, NormStats]
    lvsa: LvsaRecord
    objective: str
    language_model: str | None
    steps: int


def load_pretrained_encoder(
    source: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[VisionEncoder, EncoderInfo]:
    """Build an encoder from a pretraining output (folder or its ``encoder.json``), strictly.

    Returns the encoder (weights loaded with strict key matching) and the JSON description
    (taps, normalisation statistics per modality, image size, ...).
    """
    from safetensors.torch import load_file

    source = Path(source)
    meta_path = source / "encoder.json" if source.is_dir() else source
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: encoder description not found (run pretraining)")
    info = json.loads(meta_path.read_text())
    if info.get("format") != ENCODER_JSON_FORMAT:
        raise ValueError(f"{meta_path}: not a {ENCODER_JSON_FORMAT} file")
    enc = build_encoder(info["encoder"], pretrained=False, **info.get("arch", {}))
    weights = meta_path.parent / info["weights"]
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as exc:
        raise ValueError(f"{weights}: unreadable encoder weights ({exc})") from exc
    enc.load_state_dict(state, strict=True)
    return enc, cast(EncoderInfo, info)
