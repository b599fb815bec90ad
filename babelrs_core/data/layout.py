"""Where SOI-mini (and a user's real datasets) live on disk, in their real folder layouts."""

from __future__ import annotations

from pathlib import Path

#: Sub-folder of the raw data root for each dataset, named as the real releases are.
DATASET_DIRS: dict[str, str] = {
    "sardet": "SARDet_100K",  # Annotations/{split}.json, JPEGImages/{split}/*.png
    "dota": "DOTA",  # {split}/images/P0000.png, {split}/labelTxt/P0000.txt
    "dronevehicle": "DroneVehicle",  # {split}/{split}imgr/00001.jpg + {split}/{split}labelr/*.xml
}

#: SOI-mini's scene graphs (one JSON line per image: objects, sensor settings, caption).
SCENES_DIR = "scenes"


def dataset_roots(raw: str | Path) -> dict[str, Path]:
    """Dataset name -> its root folder under the raw data root."""
    raw = Path(raw)
    return {name: raw / sub for name, sub in DATASET_DIRS.items()}


def scenes_file(raw: str | Path, dataset: str, split: str) -> Path:
    """The JSONL file of scene graphs for one dataset split."""
    return Path(raw) / SCENES_DIR / dataset / f"{split}.jsonl"
