"""Tiny-config pretraining on a few real SOI-mini images (generator + importer + captions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from babelrs_core import stages
from babelrs_core.config import parse_params
from babelrs_core.data.synth.generate import generate_soi_mini
from babelrs_core.models import load_pretrained_encoder
from babelrs_core.pretrain.train import run_pretraining
from babelrs_core.settings_env import offline_by_default

offline_by_default()
torch.set_num_threads(1)

SPLITS = {"train": 4, "val": 2}


@pytest.mark.slow
def test_tiny_pretraining_on_soi_mini(tmp_path: Path) -> None:
    spec = {"splits": SPLITS, "image_size": {"width": 128, "height": 128}}
    params = parse_params(
        {
            "seed": 5,
            "paths": {"raw": str(tmp_path / "raw"), "manifest": str(tmp_path / "m.parquet")},
            "soi_mini": {
                "sardet": {
                    **spec,
                    "classes": ["ship", "aircraft", "car", "tank", "bridge", "harbor"],
                },
                "dota": {**spec, "classes": ["small-vehicle", "plane", "ship", "harbor"]},
                "dronevehicle": {**spec, "classes": ["car", "bus", "freight car", "truck", "van"]},
            },
            "pretrain": {
                "language_model": "tiny",
                "image_size": 64,
                "steps": 40,
                "batch_size": 4,
                "lr": 1e-2,
                "lr_scale_lm": 1.0,
                "warmup_steps": 4,
                "checkpoint_every": 20,
                "eval_max_per_task": 6,
                "max_new_tokens": 4,
                "max_answer_tokens": 16,
                "freeze": {"lm_embeddings": False, "lm_layers": 0},
                "lvsa": {"tau": 12, "grid": 4},
                "pixel_shuffle": 2,
                "tiny_lm": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64},
            },
        },
        "test",
    )
    generate_soi_mini(params, params.paths.raw, progress=False)
    stages.import_data(params, progress=False)  # the manifest and its captions table
    out = tmp_path / "pretrain"
    metrics = run_pretraining(params, out=out)
    log = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(log[-5:]) / 5 < 0.6 * sum(log[:5]) / 5
    assert set(metrics["heldout"]) == {"sar", "rgb", "ir"}
    assert "caption" in metrics["heldout"]["ir"]  # the captions table was read
    encoder, info = load_pretrained_encoder(out)
    assert info["normalization"].keys() == {"sar", "rgb", "ir"}
    assert encoder.forward_taps(torch.zeros(1, 3, 64, 64), [5, 11, 16])[-1].shape == (1, 320, 2, 2)
