"""One function per pipeline stage: the only entry points that the CLI, ``dvc.yaml`` and the
Prefect flows call. Each takes the validated params and explicit input/output paths (defaulting to
``params.paths``) and returns a small, JSON-able summary.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from babelrs_core.config import Params, captions_for
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
    """Import datasets in their real formats into one manifest (default: SOI-mini's folders),
    and the scene captions of its images into ``paths.captions`` (beside ``manifest`` when that is
    given; empty for datasets without scene files)."""
    from babelrs_core.data.captions import collect_captions, write_captions
    from babelrs_core.data.importing import import_datasets
    from babelrs_core.data.manifest import read_manifest

    target = manifest or params.paths.manifest
    report = import_datasets(
        roots or dataset_roots(params.paths.raw), target, params, progress=progress
    )
    frame = read_manifest(target)
    table = collect_captions(params.paths.raw, frame)
    captions = captions_for(params, target)
    write_captions(table, captions)
    return {**report.to_dict(), "captions": len(table), "captions_file": str(captions)}


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
    params: Params,
    manifest: Path | None = None,
    out: Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """CSIA + LVSA pretraining of the shared encoder; writes ``encoder.safetensors`` +
    ``encoder.json`` + ``metrics.json`` to ``out`` (default ``params.paths.pretrain_out``)."""
    from babelrs_core.data.integrity import check_training_data
    from babelrs_core.pretrain.train import run_pretraining
    from babelrs_core.tracking import log_step

    every, last = params.pretrain.log_every, params.pretrain.steps

    def track(step: int, metrics: dict[str, float]) -> None:
        """Losses, lr, alpha, grad norm... of every ``pretrain.log_every``-th step (and the last)
        as step metrics of the tracked stage run; ``metrics.jsonl`` keeps every step."""
        if step % every == 0 or step == last:
            log_step(step, {k: float(v) for k, v in metrics.items() if math.isfinite(v)})

    check_training_data(params, manifest)
    out = Path(out or params.paths.pretrain_out)
    result = run_pretraining(
        params, manifest, out, resume=resume, progress=progress, callbacks=[track]
    )
    if "rank" not in result:  # rank 0 (or a single process) writes the extras
        write_training_extras("pretrain", params, out, "step")
    return result


def finetune(
    params: Params,
    manifest: Path | None = None,
    encoder: Path | None = None,
    out: Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the shared multi-sensor detector (mmdet on mmengine's Runner) from the encoder
    chosen by ``finetune.init`` (csia: the pretraining output ``encoder``, default
    ``params.paths.pretrain_out``); writes ``detector.json`` + ``detector.safetensors`` +
    ``metrics.jsonl`` + ``train.json`` + ``checkpoints/`` to ``out`` (default
    ``params.paths.finetune_out``). With ``resume`` a rerun continues from the newest checkpoint."""
    from babelrs_core.data.integrity import check_training_data
    from babelrs_core.detector.train import run_finetune
    from babelrs_core.tracking import log_step

    check_training_data(params, manifest)

    def track(iteration: int, metrics: dict[str, Any]) -> None:
        """Loss curves and validation scores as step metrics of the tracked stage run."""
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        numbers.pop("iter", None)
        log_step(iteration, {k: v for k, v in numbers.items() if math.isfinite(v)})

    out = Path(out or params.paths.finetune_out)
    result = run_finetune(
        params, manifest, encoder, out, resume=resume, progress=progress, callbacks=[track]
    )
    if "rank" not in result:  # rank 0 (or a single process) writes the extras
        write_training_extras("finetune", params, out, "iter")
    return result


#: what a training stage writes beside its outputs for people and the MLflow run: the params it
#: read (resolved) and its loss / learning-rate curves from ``metrics.jsonl``
CONFIG_DUMP = "config.yaml"
LOSS_CURVES = "loss_curves.png"


def write_training_extras(name: str, params: Params, out: Path, x_key: str) -> list[Path]:
    """``out/config.yaml`` (the stage's params subset, resolved) and ``out/loss_curves.png``
    (from ``out/metrics.jsonl``), both written atomically; returns their paths."""
    import json

    import yaml

    from babelrs_core.evaluation.plots import plot_training_curves
    from babelrs_core.io.atomic import write_text
    from babelrs_core.pipeline import params_subset, stage

    subset = params_subset(params, stage(name).params)
    write_text(out / CONFIG_DUMP, yaml.safe_dump(subset, sort_keys=False, width=100))
    log = out / "metrics.jsonl"
    history = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    plot = plot_training_curves(history, out / LOSS_CURVES, f"{name}: {out.name}", x_key)
    return [out / CONFIG_DUMP, plot]


def evaluate(
    params: Params,
    manifest: Path | None = None,
    checkpoint: Path | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """SOI-Det evaluation of the fine-tuned detector in ``checkpoint`` (default
    ``params.paths.finetune_out``): per-dataset AP@50 / mAP (COCO for horizontal heads, rotated
    VOC AP for oriented ones, with their horizontal scores beside), overall, H-mAP, per-class table,
    precision-recall curves and sample predictions under ``out`` (default ``params.paths.eval_out``;
    DVC metrics in ``metrics/eval.json``)."""
    from babelrs_core.evaluation.report import run_evaluation

    return run_evaluation(params, manifest, checkpoint, out, progress=progress)


def register(params: Params, gate: bool = True) -> dict[str, Any]:
    """Log the fine-tuned detector (``paths.finetune_out``) as an MLflow pyfunc model, register it
    as a new version of ``registry.model_name`` (alias ``challenger``, its evaluation from
    ``paths.eval_out`` as tags) and run the promotion gate, which moves the alias ``champion`` to
    it only if it beats the champion on the same evaluation data. Writes
    ``registry.out_dir/registration.json``."""
    from babelrs_core.registry.registry import register as register_model
    from babelrs_core.tracking import current_run_id

    return dict(register_model(params, run_id=current_run_id(), gate=gate))


def validate(
    params: Params,
    manifest: Path | None = None,
    out: Path | None = None,
    raw: dict[str, Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate the manifest (default ``params.paths.manifest``) and its images, or the raw
    dataset folders ``raw`` (dataset name -> root, format errors included), with Great
    Expectations. Writes ``report.json`` / ``report.md`` / ``summary.json`` (and Data Docs) to
    ``out`` (default ``params.validation.out_dir``); raises
    :class:`~babelrs_core.data.validation.report.DataValidationError` when the data fails."""
    from babelrs_core.data.validation.report import DataValidationError
    from babelrs_core.data.validation.stage import run_validation
    from babelrs_core.tracking import log_current_artifacts

    try:
        report = run_validation(params, manifest, out, raw_roots=raw, progress=progress)
    except DataValidationError as exc:
        # the runner logs the spec's artifacts after a success only; on bad data the report and
        # the Data Docs are what people open, so they go to the (failing) stage run from here
        docs = [Path(exc.report.data_docs).parent] if exc.report.data_docs else []
        report_md = Path(out or params.validation.out_dir) / "report.md"
        log_current_artifacts([report_md, *docs], artifact_dir="validate")
        raise
    return report.to_dict()


def shard(
    params: Params,
    manifest: Path | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pack the manifest's images into content-addressed tar shards (``params.shards``) with an
    index for random access; ``out`` overrides ``shards.dir`` (the index goes inside it)."""
    from babelrs_core.data.shards import write_shards

    cfg = params.shards
    shard_dir = out or cfg.dir
    index = cfg.index if out is None else Path(out) / cfg.index.name
    report = write_shards(
        manifest or params.paths.manifest, shard_dir, cfg.target_mb, index, progress=progress
    )
    return report.to_dict()


def remote_bootstrap(
    remote: str = "s3",
    bucket: str | None = None,
    endpoint: str | None = None,
    save: bool = False,
    repo: Path | None = None,
) -> dict[str, Any]:
    """Create the S3 remote's bucket if missing and check access (boto3); see
    :mod:`babelrs_core.data.remote` for where endpoint, bucket and credentials come from."""
    from babelrs_core.data.remote import bootstrap

    return bootstrap(repo or Path.cwd(), remote, bucket, endpoint, save=save).to_dict()
