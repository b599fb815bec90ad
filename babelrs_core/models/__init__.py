"""Models: vision encoders (registry), LVSA tap fusion, the shared projector, the language pivot."""

from babelrs_core.models.encoders import (
    TapInfo,
    VisionEncoder,
    build_encoder,
    encoder_names,
    load_pretrained_encoder,
    register_encoder,
)

__all__ = [
    "TapInfo",
    "VisionEncoder",
    "build_encoder",
    "encoder_names",
    "load_pretrained_encoder",
    "register_encoder",
]
