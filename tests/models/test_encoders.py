"""Encoder registry, EfficientNet-Lite0 (strict ImageNet weights, taps), the ViT family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from babelrs_core.models import build_encoder, encoder_names, load_pretrained_encoder
from babelrs_core.models.encoders import ENCODER_JSON_FORMAT
from babelrs_core.models.vit import load_vit_weights

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lite0():
    return build_encoder("efficientnet_lite0").eval()


def test_registry_lists_every_family() -> None:
    assert set(encoder_names()) == {
        "efficientnet_lite0",
        "vit_tiny",
        "vit_small",
        "vit_base",
        "vit_large",
    }
    with pytest.raises(KeyError, match="known: efficientnet_lite0"):
        build_encoder("resnet50")


def test_lite0_taps_have_documented_shapes(lite0) -> None:
    assert lite0.num_layers == 16 and lite0.default_layers() == [5, 11, 16]
    feats = lite0.forward_taps(torch.zeros(2, 3, 64, 64), [5, 11, 16])
    assert [tuple(f.shape) for f in feats] == [(2, 40, 8, 8), (2, 112, 4, 4), (2, 320, 2, 2)]
    assert [(t.channels, t.stride) for t in map(lite0.tap_info, [5, 11, -1])] == [
        (40, 8),
        (112, 16),
        (320, 32),
    ]
    assert lite0.resolve_layers([-1, 0]) == [16, 0]
    with pytest.raises(ValueError, match="out of range"):
        lite0.resolve_layers([17])


def test_lite0_imagenet_weights_classify_a_photo(lite0) -> None:
    photo = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.exists():
        pytest.skip("matplotlib sample photo missing")
    from PIL import Image

    arr = np.asarray(Image.open(photo).convert("RGB").resize((224, 224)), dtype=np.float32)
    x = (torch.from_numpy(arr).permute(2, 0, 1)[None] - 127.0) / 128.0
    with torch.no_grad():
        assert int(lite0(x).argmax()) == 652  # ImageNet "military uniform"


def test_lite0_strict_keys_reject_a_wrong_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        build_encoder("efficientnet_lite0", weights=bad)


def test_frozen_bn_keeps_statistics_in_train_mode() -> None:
    enc = build_encoder("efficientnet_lite0", pretrained=False, bn="frozen").train()
    before = enc._bn0.running_mean.clone()
    enc.forward_taps(torch.randn(2, 3, 32, 32) * 5, [3])
    assert torch.equal(before, enc._bn0.running_mean)


def test_vit_taps_and_local_safetensors(tmp_path: Path) -> None:
    small = build_encoder("vit_tiny", pretrained=False, depth=4, image_size=64)
    assert small.default_layers()[-1] == 4
    feats = small.forward_taps(torch.zeros(1, 3, 64, 64), [1, -1])
    assert [tuple(f.shape) for f in feats] == [(1, 192, 4, 4)] * 2
    # an InternVL-style export: "vision_model." prefix, a position grid of another size
    other = build_encoder("vit_tiny", pretrained=False, depth=4, image_size=96)
    state = {f"vision_model.{k}": v for k, v in other.state_dict().items()}
    state["mlp1.0.weight"] = torch.zeros(3)  # projector weights are ignored
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path))
    load_vit_weights(small, path)
    assert torch.equal(
        small.encoder.layers[0].attn.qkv.weight, other.encoder.layers[0].attn.qkv.weight
    )
    assert small.embeddings.position_embedding.shape == (1, 17, 192)
    deeper = build_encoder("vit_tiny", pretrained=False, depth=5, image_size=64)
    with pytest.raises(ValueError, match="does not match"):
        load_vit_weights(deeper, path)


def test_vit_large_has_internvit_layout() -> None:
    from babelrs_core.models.vit import VIT_SIZES

    large = VIT_SIZES["large"]
    assert (large["width"], large["depth"], large["heads"], large["patch"]) == (1024, 24, 16, 14)


def test_load_pretrained_encoder_round_trip(tmp_path: Path) -> None:
    enc = build_encoder("vit_tiny", pretrained=False, depth=2, image_size=32)
    save_file(
        {k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp_path / "e.safetensors")
    )
    info = {
        "format": ENCODER_JSON_FORMAT,
        "encoder": "vit_tiny",
        "arch": enc.arch_kwargs,
        "weights": "e.safetensors",
    }
    (tmp_path / "encoder.json").write_text(json.dumps(info))
    again, meta = load_pretrained_encoder(tmp_path)
    assert meta["encoder"] == "vit_tiny"
    for k, v in enc.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
