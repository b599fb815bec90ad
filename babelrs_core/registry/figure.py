"""The README's picture of the champion at work: ``make champion-figure``.

1. ``samples``: one held-out SOI-mini image per sensor (the first image of each dataset's
   evaluation split, ``evaluation.splits``), cut to its manifest window (DroneVehicle loses its
   white border, as every DroneVehicle user does) and written as PNG files a consumer would send;
2. ``babelrs predict --overlays`` on each of them (the README's consumer command);
3. ``mosaic``: the three overlays side by side, one PNG for docs/img.

    python -m babelrs_core.registry.figure samples <out_dir> [--params params.yaml]
    python -m babelrs_core.registry.figure mosaic <predict_dir> <target.png>
"""

from __future__ import annotations

import sys
from pathlib import Path

from babelrs_core.concepts import MODALITIES


def write_samples(params_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """``{modality: PNG path}`` of the first held-out image of each dataset."""
    import numpy as np
    from PIL import Image

    from babelrs_core.concepts import DATASETS
    from babelrs_core.config import load_params
    from babelrs_core.data.image_source import ImageRef, open_source
    from babelrs_core.data.manifest import read_manifest
    from babelrs_core.detector.data import image_items
    from babelrs_core.io.atomic import atomic_path

    params = load_params(params_path)
    frame = read_manifest(params.paths.manifest)
    out: dict[str, Path] = {}
    for ds, split in params.evaluation.splits.items():
        items = image_items(frame, ds, split)
        if not items:
            raise ValueError(f"{params.paths.manifest}: no {ds} images in split {split!r}")
        it = items[0]
        arr = open_source(params).load(ImageRef.of_item(it))
        modality = DATASETS[ds].modality
        target = Path(out_dir) / f"{modality}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, suffix=".png") as tmp:
            Image.fromarray(np.asarray(arr, np.uint8)).save(tmp, format="PNG")
        out[modality] = target
    return out


def write_mosaic(predict_dir: str | Path, target: str | Path) -> Path:
    """The overlays ``<predict_dir>/<modality>/<modality>.overlay.png`` in one row."""
    from PIL import Image

    from babelrs_core.evaluation.plots import mosaic, save_png

    tiles = []
    for m in MODALITIES:
        path = Path(predict_dir) / m / f"{m}.overlay.png"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run `babelrs predict --overlays` for {m} first")
        tiles.append(Image.open(path).convert("RGB"))
    title = "models:/babelrs-detector@champion on held-out SOI-mini images: SAR, RGB, IR"
    return save_png(mosaic(tiles, title, tile_px=320), target)


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "samples":
        params = argv[3] if len(argv) > 3 and argv[2] == "--params" else "params.yaml"
        for m, p in write_samples(params, argv[1]).items():
            print(f"{m}: {p}")
    elif len(argv) == 3 and argv[0] == "mosaic":
        print(write_mosaic(argv[1], argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
