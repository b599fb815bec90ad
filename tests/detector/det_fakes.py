"""Fake data for detector tests: a tiny three-sensor manifest and a fake pretraining output.

Each class draws a distinctive shape (bright square, dark ring, cross) so that a few training
iterations lower the loss. SAR and IR files are grey (replicated to three channels on load), RGB
files are colour; IR files carry a border that the manifest's crop window removes (as DroneVehicle's
100-px white frame). One DOTA object per image is marked difficult.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from babelrs_core.data.manifest import ManifestRow, write_manifest
from babelrs_core.geometry import poly_from_hbox

FAKE = {
    "sardet": ("sar", ["ship", "car"], {"train": 6, "test": 3}),
    "dota": ("rgb", ["plane", "ship", "small-vehicle"], {"train": 6, "val": 3}),
    "dronevehicle": ("ir", ["car", "bus"], {"train": 6, "test": 3}),
}
BORDER = (8, 4)  # IR crop (x, y)


def _draw(img: np.ndarray, kind: int, x1: int, y1: int, x2: int, y2: int) -> None:
    if kind == 0:
        img[y1:y2, x1:x2] = 240
    elif kind == 1:
        img[y1:y2, x1:x2] = 15
        img[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3] = 170
    else:
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        img[y1:y2, cx - 2 : cx + 2] = 250
        img[cy - 2 : cy + 2, x1:x2] = 250


def make_fake_manifest(root: Path, size: int = 64, seed: int = 0) -> Path:
    """Write images and a manifest under ``root``; return the manifest path."""
    rng = np.random.default_rng(seed)
    rows: list[ManifestRow] = []
    for ds, (modality, classes, splits) in FAKE.items():
        for split, n in splits.items():
            for i in range(n):
                img = np.full((size, size), 90, np.uint8)
                img += rng.integers(0, 25, (size, size), dtype=np.uint8)
                objs = []
                for j in range(2):
                    kind = int(rng.integers(0, len(classes)))
                    w = int(rng.integers(size // 5, size // 3))
                    x1 = int(rng.integers(0, size // 2 - w)) + (size // 2 if j else 0)
                    y1 = int(rng.integers(0, size - w))
                    _draw(img, kind, x1, y1, x1 + w, y1 + w)
                    objs.append((classes[kind], x1, y1, x1 + w, y1 + w))
                path = root / "raw" / ds / split / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                crop = (0, 0)
                if modality == "rgb":
                    Image.fromarray(np.stack([img, img // 2 + 60, 255 - img], -1)).save(path)
                elif modality == "ir":
                    crop = BORDER
                    framed = np.full((size + 2 * crop[1], size + 2 * crop[0]), 255, np.uint8)
                    framed[crop[1] : crop[1] + size, crop[0] : crop[0] + size] = img
                    Image.fromarray(framed).save(path)
                else:
                    Image.fromarray(img).save(path)
                image_id = f"{ds}/{split}/{i:04d}"
                for k, (cls, x1, y1, x2, y2) in enumerate(objs):
                    rows.append(ManifestRow(
                        image_id, ds, modality, split, str(path), size, size, crop[0], crop[1],
                        object_index=k, class_name=cls, raw_class=cls, label=0,
                        x1=x1, y1=y1, x2=x2, y2=y2, poly=poly_from_hbox(x1, y1, x2, y2),
                        difficult=(ds == "dota" and k == 1 and i % 3 == 0),
                        source_file=str(path), source_line=k,
                    ))  # fmt: skip
    manifest = root / "manifest.parquet"
    write_manifest(rows, manifest)
    return manifest


def make_fake_encoder(folder: Path, seed: int = 0) -> Path:
    """A pretraining output (encoder.json + encoder.safetensors) of a random EfficientNet-Lite0."""
    import torch
    from safetensors.torch import save_file

    from babelrs_core.models.encoders import ENCODER_JSON_FORMAT, build_encoder

    torch.manual_seed(seed)
    enc = build_encoder("efficientnet_lite0", pretrained=False)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in enc.state_dict().items()}
    save_file(state, str(folder / "encoder.safetensors"))
    info = {
        "format": ENCODER_JSON_FORMAT,
        "encoder": "efficientnet_lite0",
        "arch": enc.arch_kwargs,
        "weights": "encoder.safetensors",
        "num_layers": enc.num_layers,
        "taps": [{"layer": 5, "channels": 40, "stride": 8}],
        "image_size": 64,
        "normalization": {
            "sar": {"mean": [100.0] * 3, "std": [40.0] * 3},
            "rgb": {"mean": [100.0, 110.0, 150.0], "std": [40.0, 30.0, 40.0]},
            "ir": {"mean": [100.0] * 3, "std": [40.0] * 3},
        },
        "steps": 1,
    }
    (folder / "encoder.json").write_text(json.dumps(info))
    return folder


#: params overrides for a tiny, fast run on the fake data
TINY = {
    "finetune.iters": 10,
    "finetune.batch_size": 4,
    "finetune.lr": 0.002,
    "finetune.warmup_iters": 2,
    "finetune.neck_channels": 16,
    "finetune.frozen_layers": -1,
    "finetune.log_every": 2,
    "finetune.checkpoint_every": 4,
    "finetune.keep_checkpoints": 2,
    "finetune.grad_cosine_every": 4,
    "finetune.val_every": 0,  # the fake data has no val split for every dataset
    "finetune.threads": 1,
    "finetune.device": "cpu",
    "finetune.modalities.sar.image_size": 64,
    "finetune.modalities.rgb.image_size": 64,
    "finetune.modalities.ir.image_size": 64,
    "evaluation.samples_per_modality": 2,
    **{
        f"finetune.heads.{ds}.{k}": v
        for ds in FAKE
        for k, v in {"stacked_convs": 1, "feat_channels": 16, "anchor_scale": 4}.items()
    },
}


def tiny_params(root: Path, **extra: object):
    """Validated params for the fake data: outputs under ``root``."""
    from babelrs_core.config import load_params

    repo = Path(__file__).resolve().parents[2]
    overrides = {
        **TINY,
        "paths.manifest": str(root / "manifest.parquet"),
        "paths.pretrain_out": str(root / "pretrain"),
        "paths.finetune_out": str(root / "finetune"),
        "paths.eval_out": str(root / "eval"),
        **extra,
    }
    return load_params(repo / "params.yaml", overrides)
