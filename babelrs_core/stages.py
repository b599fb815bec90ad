"""One function per pipeline stage: the only entry points that the CLI, ``dvc.yaml`` and the
Prefect flows call. Each takes the validated params and explicit input/output paths (defaulting to
``params.paths``) and returns a small, JSON-able summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babelrs_core.config import Params
from babelrs_core.data.layout import dataset_roots


def generate(params: Params, out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Render SOI-mini into ``out`` (default ``params.paths.raw``) in the three real formats."""
    from babelrs_core.data.synth.generate import generate_soi_mini

    return generate_soi_mini(params, out or params.paths.raw, progress=progress)


def import_data(
    params: Params,
    roots: dict[str, Path] | None = None,
    manifest: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Import datasets in their real formats into one manifest (default: SOI-mini's folders)."""
    from babelrs_core.data.importing import import_datasets

    roots = roots or dataset_roots(params.paths.raw)
    report = import_datasets(roots, manifest or params.paths.manifest, params, progress=progress)
    return report.to_dict()


def preview(params: Params, manifest: Path | None = None, out: Path | None = None) -> Path:
    """Write the PNG mosaic of samples per modality with their boxes drawn."""
    from babelrs_core.data.preview import make_mosaic

    cfg = params.preview
    return make_mosaic(
        manifest or params.paths.manifest,
        out or params.paths.preview,
        per_modality=cfg.per_modality,
        tile_px=cfg.tile_px,
        split=cfg.split,
        seed=params.seed,
    )


def pretrain(
    params: Params, manifest: Path | None = None, out: Path | None = None, resume: bool = True
) -> dict[str, Any]:
    """CSIA + LVSA pretraining of the shared encoder; writes ``encoder.safetensors`` +
    ``encoder.json`` + ``metrics.json`` to ``out`` (default ``params.paths.pretrain_out``)."""
    from babelrs_core.pretrain.train import run_pretraining

    return run_pretraining(params, manifest, out, resume=resume, progress=True)
