"""The fine-tuning stage: build the mmengine config from params, train on mmengine's ``Runner``
(iteration-based, checkpoints, resume), export the inference checkpoint.

``finetune.init`` is the late-alignment switch of docs/method.md §7: ``csia`` starts the encoder
from the pretraining stage's output, ``imagenet`` from the encoder's ImageNet weights, ``scratch``
from nothing; everything else (detector, data, schedule) is identical.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from babelrs_core import distributed as dist_util
from babelrs_core.concepts import DATASETS
from babelrs_core.config import Params
from babelrs_core.detector import checkpoint as ckpt
from babelrs_core.detector.config import (
    datasets_of,
    fast_config,
    modalities_of,
    register_all,
    resolve_device,
    resolve_normalization,
    runner_config,
    start_backbone,
)
from babelrs_core.detector.hooks import (
    MetricsCallback,
    MetricsJsonlHook,
    ValidationHook,
    read_metrics,
)
from babelrs_core.fingerprint import Fingerprint, fingerprint_changes
from babelrs_core.io.atomic import sweep_temporaries, write_json, write_text
from babelrs_core.io.hashing import file_sha256
from babelrs_core.models.encoders import EncoderInfo

if TYPE_CHECKING:  # for an annotation only (register_all imports the models at run time)
    from babelrs_core.detector.model import MultiHeadDetector

#: mAP per dataset vs iteration on the validation split (written during training)
VALIDATION_CSV = "validation.csv"
#: the mmengine config the run trains with, as Python text (``runner.cfg.pretty_text``)
MMENGINE_CONFIG = "mmengine_config.py"


def fingerprint(params: Params, manifest: Path, encoder_dir: Path | None) -> Fingerprint:
    """The params that shape a fine-tuning run (a resume with others is refused)."""
    fp: Fingerprint = {
        "finetune": params.finetune.model_dump(mode="json"),
        "evaluation.ignore_difficult": params.evaluation.ignore_difficult,
        "model.encoder": params.model.encoder,
        "seed": params.seed,
        "manifest": str(Path(manifest).resolve()),
        "backbone": start_backbone(params.finetune),  # as trained (scratch trains everything)
    }
    if params.finetune.init == "csia" and encoder_dir is not None:
        meta = Path(encoder_dir) / "encoder.json"
        fp["encoder_sha256"] = file_sha256(meta) if meta.exists() else None
    for key in ("log_every", "checkpoint_every", "keep_checkpoints", "threads", "device"):
        fp["finetune"].pop(key, None)  # bookkeeping, not the run itself
    fp["finetune"].pop("iters", None)  # a run may be extended
    return fp


def _check_fingerprint(path: Path, current: Fingerprint) -> None:
    changes = fingerprint_changes(json.loads(path.read_text()), current)
    if changes:
        raise ckpt.DetectorCheckpointError(
            f"{path}: the checkpoints in {path.parent} come from different params "
            f"({changes}); run without resume (or delete the folder) to start over"
        )


def _runner_class():
    from mmengine.runner import Runner

    class DeviceRunner(Runner):
        """mmengine ``Runner`` that keeps the model on ``finetune.device`` (CPU even with a GPU)
        and, under torchrun, wraps it in our DDP wrapper (CPU / gloo included)."""

        device = "cpu"
        sync_bn = False

        def wrap_model(self, model_wrapper_cfg: Any, model: torch.nn.Module) -> torch.nn.Module:
            if not self.distributed:
                if self.device == "cpu":
                    return model.to("cpu")
                return super().wrap_model(model_wrapper_cfg, model)
            from babelrs_core.detector.ddp import BabelRSDistributedDataParallel

            if self.device == "cuda":
                model = model.to(torch.device("cuda", torch.cuda.current_device()))
                if self.sync_bn:  # finetune.bn = train: statistics of the global batch
                    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                model = model.to("cpu")
            return BabelRSDistributedDataParallel(
                module=model, broadcast_buffers=False, find_unused_parameters=True
            )

    return DeviceRunner


def prepare_normalization(
    params: Params, manifest: Path, pretrain_info: EncoderInfo | None
) -> tuple[dict, dict]:
    """Per-modality statistics for the run (computing data statistics only when needed)."""
    from babelrs_core.data.image_source import open_source
    from babelrs_core.detector.data import modality_statistics

    try:
        return resolve_normalization(params, pretrain_info)
    except ValueError:
        stats = modality_statistics(
            manifest, modalities_of(params), seed=params.seed, source=open_source(params)
        )
        return resolve_normalization(params, pretrain_info, stats)


def run_finetune(
    params: Params,
    manifest: str | os.PathLike[str] | None = None,
    encoder: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    callbacks: Iterable[MetricsCallback] = (),
    progress: bool = False,
    hooks: Iterable[Any] = (),
) -> dict[str, Any]:
    """Fine-tune the shared detector; returns a JSON-able summary (also written to ``train.json``).

    ``manifest`` defaults to ``paths.manifest``, ``encoder`` (the pretraining output, used when
    ``finetune.init`` is ``csia``) to ``paths.pretrain_out``, ``out`` to ``paths.finetune_out``.
    With ``resume`` a rerun continues from the newest checkpoint of the same run. ``callbacks``
    receive every metrics line (``f(iteration, metrics)``); ``hooks`` are extra mmengine hooks
    (e.g. a tracking hook), registered with their own priority. Under ``torchrun`` the processes
    train together (mmengine's ``pytorch`` launcher); rank 0 alone writes files and calls back,
    the other ranks return ``{"rank": r}``.
    """
    if params.finetune.threads:
        torch.set_num_threads(params.finetune.threads)
    device = resolve_device(params.finetune.device)
    with dist_util.process_group(device, params.distributed.backend):
        return _run(params, device, manifest, encoder, out, resume, callbacks, progress, hooks)


def _run(
    params: Params,
    device: str,
    manifest: str | os.PathLike[str] | None,
    encoder: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] | None,
    resume: bool,
    callbacks: Iterable[MetricsCallback],
    progress: bool,
    hooks: Iterable[Any],
) -> dict[str, Any]:
    cfg = params.finetune
    main, world = dist_util.is_main(), dist_util.world_size()
    manifest = Path(manifest or params.paths.manifest)
    out = Path(out or params.paths.finetune_out)
    encoder_dir = Path(encoder or params.paths.pretrain_out) if cfg.init == "csia" else None
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: manifest not found (run `babelrs data import` first)")
    if encoder_dir is not None and not (encoder_dir / "encoder.json").exists():
        raise FileNotFoundError(
            f"{encoder_dir / 'encoder.json'}: pretraining output not found; run the pretraining "
            "stage first, or set finetune.init to imagenet or scratch"
        )
    t0 = time.perf_counter()

    work_dir = out / "checkpoints"
    fp = fingerprint(params, manifest, encoder_dir)
    run_json = out / "run.json"
    latest = ckpt.latest_training_checkpoint(work_dir) if resume else None
    # every rank loads the checkpoint: on several nodes they must all see the same one
    dist_util.agree(
        latest and latest.name,
        f"the checkpoint to resume from in {work_dir}",
        dist_util.SHARED_OUTPUTS_HINT.format(key="paths.finetune_out"),
    )
    start_iter = 0
    if latest is not None:
        if run_json.exists():
            _check_fingerprint(run_json, fp)
        # refuse a damaged file before mmengine reads it (mmengine would fall back to pickle)
        state = ckpt.safe_load_training_checkpoint(latest)
        start_iter = int(state["meta"].get("iter", 0))
        del state
    elif main:
        shutil.rmtree(work_dir, ignore_errors=True)
        for name in (
            "metrics.jsonl",
            "train.json",
            VALIDATION_CSV,
            ckpt.DETECTOR_JSON,
            ckpt.DETECTOR_WEIGHTS,
        ):
            (out / name).unlink(missing_ok=True)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for folder in (out, work_dir):  # half-written files of a killed run (never read)
            sweep_temporaries(folder)
        write_json(run_json, fp)
    dist_util.barrier()  # rank 0 has cleared or kept the folder before anyone builds the runner

    pretrain_info: EncoderInfo | None = None
    arch: dict[str, Any] = {}
    if encoder_dir is not None:
        pretrain_info = cast(EncoderInfo, json.loads((encoder_dir / "encoder.json").read_text()))
        arch = dict(pretrain_info.get("arch", {}))
    norm, norm_source = prepare_normalization(params, manifest, pretrain_info)
    register_all()

    rcfg = runner_config(
        params,
        manifest,
        work_dir,
        norm,
        pretrained_dir=encoder_dir,
        arch=arch,
        device=device,
        resume=latest is not None,
        quiet=not (progress and main),
        world_size=world,
    )
    # resume from exactly the file verified above (mmengine would re-read last_checkpoint and
    # resolve a relative name against the working directory)
    rcfg["load_from"] = str(latest.resolve()) if latest is not None else None
    runner_cls = _runner_class()
    runner_cls.device = device
    runner_cls.sync_bn = start_backbone(cfg)["bn"] == "train"
    runner = runner_cls.from_cfg(fast_config(rcfg))
    # mmengine's MMLogger is outside the logging tree: handlers on the standard "mmengine" logger
    # (e.g. the Prefect task log of flows/retrain.py, which shows them on the console too) take
    # the Runner's records instead of its own console handler (each line once)
    routed = logging.getLogger("mmengine").handlers
    if routed:
        for own in list(runner.logger.handlers):
            if type(own) is logging.StreamHandler:
                runner.logger.removeHandler(own)
        for handler in routed:
            runner.logger.addHandler(handler)
    metrics_path = out / "metrics.jsonl"
    if main:  # the resolved mmengine config as text, for people and the MLflow run
        write_text(out / MMENGINE_CONFIG, runner.cfg.pretty_text)
        runner.register_hook(
            MetricsJsonlHook(str(metrics_path), cfg.log_every, callbacks), priority="LOW"
        )
        for hook in hooks:
            runner.register_hook(hook, priority=getattr(hook, "priority", "NORMAL"))
        if cfg.val_every > 0:
            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            info = detector_info(params, model, norm, norm_source, encoder_dir, pretrain_info)
            runner.register_hook(
                validation_hook(params, manifest, out, info, callbacks), priority="VERY_LOW"
            )
    t_build = time.perf_counter() - t0
    t_train0 = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - t_train0
    dist_util.barrier()  # rank 0's last checkpoint is written
    if not main:
        return {"rank": dist_util.rank(), "iters_this_run": cfg.iters - start_iter}

    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    info = detector_info(params, model, norm, norm_source, encoder_dir, pretrain_info)
    ckpt.export_detector(model, out, info)
    history = read_metrics(metrics_path)
    summary = train_summary(params, history, device, start_iter, t_build, train_s, runner)
    summary["processes"] = world
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    summary["out"] = str(out)
    previous = out / "train.json"
    if start_iter >= cfg.iters and previous.exists():
        # a rerun of a finished run only re-exports: keep the timing of the run that trained
        old = json.loads(previous.read_text())
        for key in ("timing", "total_s", "threads", "device", "resumed_from", "iters_this_run"):
            if key in old:
                summary[key] = old[key]
    write_json(previous, summary)
    return summary


def validation_hook(
    params: Params,
    manifest: Path,
    out: Path,
    info: ckpt.DetectorInfo,
    callbacks: Iterable[MetricsCallback] = (),
) -> ValidationHook:
    """The hook that scores the model on ``finetune.val_split`` every ``finetune.val_every``
    iterations into ``<out>/validation.csv``."""
    from babelrs_core.data.image_source import open_source
    from babelrs_core.data.manifest import read_manifest
    from babelrs_core.detector.data import image_items

    cfg, ev = params.finetune, params.evaluation
    frame = read_manifest(manifest)
    items: dict[str, list[dict[str, Any]]] = {}
    for ds in datasets_of(params):
        found = image_items(frame, ds, cfg.val_split, ev.ignore_difficult)[: cfg.val_max_images]
        if not found:
            raise ValueError(
                f"{manifest}: no {ds} images in split {cfg.val_split!r} for the validation "
                "during fine-tuning (finetune.val_split); set finetune.val_every: 0 to turn it off"
            )
        items[ds] = found
    return ValidationHook(
        out / VALIDATION_CSV,
        cfg.val_every,
        items,
        info,
        batch_size=ev.batch_size,
        ignore_difficult=ev.ignore_difficult,
        max_dets=ev.max_dets,
        callbacks=callbacks,
        source=open_source(params),
    )


def detector_info(
    params: Params,
    model: MultiHeadDetector,
    norm: dict,
    norm_source: dict,
    encoder_dir: Path | None,
    pretrain_info: EncoderInfo | None,
) -> ckpt.DetectorInfo:
    """What ``detector.json`` records besides the weights: enough to rebuild and to use it."""
    from babelrs_core.detector.config import model_config

    cfg = params.finetune
    arch = model.backbone.arch
    return {
        "model": model_config(params, norm, init="scratch", arch=arch),
        "encoder": params.model.encoder,
        "init": cfg.init,
        "pretrain": {
            "dir": str(encoder_dir) if encoder_dir else None,
            "sha256": pretrain_info.get("sha256") if pretrain_info else None,
            "steps": pretrain_info.get("steps") if pretrain_info else None,
            "lvsa": pretrain_info.get("lvsa") if pretrain_info else None,
        },
        "datasets": {
            ds: {
                "modality": DATASETS[ds].modality,
                "box_type": cfg.heads[ds].box_type,
                "head": cfg.heads[ds].type,
                "classes": list(DATASETS[ds].class_names),
                "soi_names": [c.soi_name for c in DATASETS[ds].classes],
            }
            for ds in datasets_of(params)
        },
        "modalities": {
            m: {
                "image_size": cfg.modalities[m].image_size,
                "mean": norm[m]["mean"],
                "std": norm[m]["std"],
                "source": norm_source[m],
            }
            for m in modalities_of(params)
        },
        "iters": cfg.iters,
        "finetune": cfg.model_dump(mode="json"),
        "seed": params.seed,
    }


def train_summary(
    params: Params,
    history: list[dict[str, Any]],
    device: str,
    start_iter: int,
    build_s: float,
    train_s: float,
    runner: Any,
) -> dict[str, Any]:
    cfg = params.finetune
    losses = [h["loss"] for h in history if h.get("loss") is not None]
    cos_keys = sorted({k for h in history for k in h if k.startswith("gradcos.")})
    cosines = {k: [h[k] for h in history if h.get(k) is not None] for k in cos_keys}
    iters_run = cfg.iters - start_iter
    return {
        "init": cfg.init,
        "encoder": params.model.encoder,
        "iters": cfg.iters,
        "resumed_from": start_iter,
        "iters_this_run": iters_run,
        "first_loss": losses[0] if losses else None,
        # GFL's quality-weighted losses first rise while the scores grow, then fall
        "peak_loss": max(losses) if losses else None,
        "final_loss": losses[-1] if losses else None,
        "loss_history": [{"iter": h["iter"], "loss": h.get("loss")} for h in history],
        "per_head_final": {
            ds: next((h.get(f"{ds}.loss") for h in reversed(history) if h.get(f"{ds}.loss")), None)
            for ds in datasets_of(params)
        },
        "nonfinite_steps": int(getattr(runner.optim_wrapper, "nonfinite_steps", 0)),
        "grad_cosine_mean": {k: sum(v) / len(v) for k, v in cosines.items() if v},
        "timing": {
            "build_s": round(build_s, 2),
            "train_s": round(train_s, 2),
            "s_per_iter": round(train_s / iters_run, 3) if iters_run > 0 else None,
        },
        "device": device,
        "threads": torch.get_num_threads(),
        "settings": {
            "batch_size": cfg.batch_size,
            "source_ratio": cfg.source_ratio,
            "lr": cfg.lr,
            "precision": cfg.precision,
            "image_sizes": {m: s.image_size for m, s in cfg.modalities.items()},
            "heads": {ds: f"{h.type} ({h.box_type})" for ds, h in cfg.heads.items()},
            "seed": params.seed,
        },
    }
