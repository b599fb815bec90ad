"""Shared tiny SOI-mini: a few small images per dataset, generated once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from babelrs_core.config import Params, parse_params
from babelrs_core.data.synth.generate import generate_soi_mini

TINY: dict[str, Any] = {
    "seed": 11,
    "soi_mini": {
        "sardet": {
            "splits": {"train": 4, "val": 1},
            "classes": ["ship", "aircraft", "car", "tank", "bridge", "harbor"],
            "image_size": {"width": 160, "height": 128},
            "objects_per_image": {"lo": 2, "hi": 4},
        },
        "dota": {
            "splits": {"train": 4, "val": 1},
            "classes": [
                "small-vehicle",
                "large-vehicle",
                "plane",
                "ship",
                "storage-tank",
                "harbor",
            ],
            "image_size": {"width": 160, "height": 128},
            "objects_per_image": {"lo": 2, "hi": 5},
        },
        "dronevehicle": {
            "splits": {"train": 4, "test": 2},
            "classes": ["car", "bus", "freight car", "truck", "van"],
            "image_size": {"width": 160, "height": 128},
            "objects_per_image": {"lo": 3, "hi": 6},
        },
        # exaggerated so that a handful of images exercises every label quirk
        "ir": {"label_typo_fraction": 0.6, "bndbox_fraction": 0.25},
    },
}


def tiny_params(**sections: Any) -> Params:
    """TINY with ``soi_mini`` sections replaced (e.g. ``dota={...}``)."""
    data = {"seed": TINY["seed"], "soi_mini": {**TINY["soi_mini"], **sections}}
    return parse_params(data)


@pytest.fixture(scope="session")
def params() -> Params:
    return tiny_params()


@pytest.fixture(scope="session")
def generated(params: Params, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``(raw root, counts)`` of the tiny SOI-mini."""
    out = tmp_path_factory.mktemp("soi") / "raw"
    counts = generate_soi_mini(params, out, progress=False)
    return out, counts


@pytest.fixture(scope="session")
def make_params():
    """Factory: TINY with some ``soi_mini`` sections replaced."""
    return tiny_params
