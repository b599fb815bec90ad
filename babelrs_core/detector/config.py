"""The mmengine / mmdet config of a fine-tuning run, built from ``params.finetune``.

:func:`model_config` is the detector alone (also stored in ``detector.json`` to rebuild the model
for inference); :func:`runner_config` is the whole mmengine ``Runner`` config: iteration-based loop,
the multi-source data loader over manifest datasets, AdamW + warmup + step decay, our optimizer
wrapper, checkpoints and hooks. Nothing here touches the file system or builds weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from babelrs_core.concepts import DATASET_NAMES, DATASETS, DatasetName, Modality
from babelrs_core.config import Params
from babelrs_core.data.image_source import source_spec
from babelrs_core.detector.checkpoint import ATOMIC_BACKEND
from babelrs_core.detector.data import IMAGENET_MEAN, IMAGENET_STD, train_pipeline
from babelrs_core.detector.heads import head_config
from babelrs_core.models.encoders import EncoderInfo, NormStats, build_encoder

#: modality -> mean / std of its pixels
Norm = dict[str, NormStats]


def register_all() -> None:
    """Import every module that registers into mmdet / mmrotate / mmengine registries; set mmdet's
    scope (mmrotate parts are named with the ``mmrotate.`` prefix)."""
    from mmdet.utils import register_all_modules
    from mmrotate.utils import register_all_modules as register_mmrotate

    register_mmrotate(init_default_scope=False)
    register_all_modules(init_default_scope=True)
    from babelrs_core.detector import (  # noqa: F401
        backbone,
        data,
        ddp,
        hooks,
        iou,
        losses,
        model,
        optim,
        twostage,
    )


def fast_config(cfg: dict[str, Any]) -> Any:
    """An mmengine ``Config`` whose ``pretty_text`` is a plain ``pprint`` (cached).

    mmengine formats the config with yapf for the log, the dumped file and *every checkpoint*;
    that costs seconds each time on a small CPU. The plain text is still a valid Python config.
    """
    import pprint

    from mmengine.config import Config

    class FastConfig(Config):
        @property
        def pretty_text(self) -> str:
            cached = self.__dict__.get("_babelrs_text")
            if cached is None:
                data = self.to_dict()
                cached = "".join(f"{k} = {pprint.pformat(v, width=100)}\n" for k, v in data.items())
                super(Config, self).__setattr__("_babelrs_text", cached)
            return cached

    return FastConfig(cfg)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error.
    Under torchrun each process is put on the GPU of its local rank."""
    from babelrs_core.distributed import resolve_device as resolve

    return resolve(name, "finetune.device").type


def encoder_geometry(
    encoder: str, arch: dict[str, Any], layers: Sequence[int] | None, vit_strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(channels, strides) of the backbone outputs, from a weightless (meta-device) encoder."""
    with torch.device("meta"):
        enc = build_encoder(encoder, pretrained=False, **arch)
    taps = [enc.tap_info(k) for k in enc.resolve_layers(layers)]
    if hasattr(enc, "embeddings") and hasattr(enc, "patch"):  # ViT: simple feature pyramid
        return [taps[0].channels] * len(vit_strides), list(vit_strides)
    return [t.channels for t in taps], [t.stride for t in taps]


def datasets_of(params: Params) -> list[DatasetName]:
    """The datasets being trained, in the fixed SOI-Det order (SAR, DOTA, DroneVehicle)."""
    return [d for d in DATASET_NAMES if d in params.finetune.heads]


def modalities_of(params: Params) -> list[Modality]:
    return sorted({DATASETS[d].modality for d in datasets_of(params)})


def resolve_normalization(
    params: Params,
    pretrain_info: EncoderInfo | None,
    data_stats: Norm | None = None,
) -> tuple[Norm, dict[str, str]]:
    """Per-modality mean / std, and where each came from (``params`` / ``encoder`` / ``data`` /
    ``imagenet``). ``data_stats`` must be given when some modality needs ``data``."""
    cfg = params.finetune
    mode = cfg.normalization
    enc_norm = (pretrain_info.get("normalization") if pretrain_info else None) or {}
    norm: Norm = {}
    source: dict[str, str] = {}
    for mod in modalities_of(params):
        spec = cfg.modalities[mod]
        if spec.mean is not None and spec.std is not None:
            norm[mod], source[mod] = {"mean": list(spec.mean), "std": list(spec.std)}, "params"
        elif mode == "imagenet":
            norm[mod], source[mod] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "imagenet"
        elif mode == "encoder" or (mode == "auto" and mod in enc_norm):
            if mod not in enc_norm:
                raise ValueError(
                    f"finetune.normalization=encoder: the pretraining output has no statistics "
                    f"for modality {mod!r} (init {cfg.init})"
                )
            norm[mod], source[mod] = _copy(enc_norm[mod]), "encoder"
        else:
            if data_stats is None or mod not in data_stats:
                raise ValueError(f"no data statistics given for modality {mod!r}")
            norm[mod], source[mod] = _copy(data_stats[mod]), "data"
    return norm, source


def _copy(stats: NormStats) -> NormStats:
    return {"mean": list(stats["mean"]), "std": list(stats["std"])}


def fpn_config(cfg: Any, channels: Sequence[int]) -> dict[str, Any]:
    """The shared FPN over the backbone's ``channels`` (``finetune.neck_*``)."""
    return {
        "type": "FPN",
        "in_channels": list(channels),
        "out_channels": cfg.neck_channels,
        "start_level": 0,
        "add_extra_convs": "on_output",
        "num_outs": cfg.neck_outs,
    }


def model_config(
    params: Params,
    norm: Norm,
    *,
    init: str | None = None,
    pretrained_dir: str | Path | None = None,
    arch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``MultiHeadDetector`` config. ``init='scratch'`` + ``arch`` rebuilds a checkpoint."""
    cfg = params.finetune
    init = init or cfg.init
    encoder = params.model.encoder
    arch = dict(arch or {})
    channels, strides = encoder_geometry(encoder, arch, cfg.layers, cfg.vit_strides)
    if cfg.neck_outs < len(channels):
        raise ValueError(
            f"finetune.neck_outs ({cfg.neck_outs}) must be >= the number of backbone levels "
            f"({len(channels)})"
        )
    head_strides = [strides[0] * 2**i for i in range(cfg.neck_outs)]
    return {
        "type": "MultiHeadDetector",
        "data_preprocessor": {
            "type": "ModalityDataPreprocessor",
            "norm": norm,
            "pad_size_divisor": 32,
            "bgr_to_rgb": False,
            "boxtype2tensor": False,  # RotatedBoxes stay boxes; HorizontalBoxes become tensors
        },
        "backbone": {
            "type": "BabelRSBackbone",
            "encoder": encoder,
            "init": init,
            "pretrained_dir": str(pretrained_dir) if pretrained_dir else None,
            "weights": str(cfg.encoder_weights) if cfg.encoder_weights else None,
            "arch": arch,
            "layers": list(cfg.layers) if cfg.layers is not None else None,
            "vit_strides": list(cfg.vit_strides),
            **start_backbone(cfg),
            "channels_last": cfg.channels_last,
        },
        "neck": fpn_config(cfg, channels),
        "heads": {
            ds: head_config(ds, cfg.heads[ds], cfg.neck_channels, head_strides)
            for ds in datasets_of(params)
        },
        "loss_weights": {ds: cfg.heads[ds].loss_weight for ds in datasets_of(params)},
    }


def start_backbone(cfg: Any) -> dict[str, Any]:
    """The encoder's BatchNorm mode and frozen layers as trained: ``finetune.bn`` and
    ``frozen_layers``, except that a ``scratch`` start trains everything (its BatchNorm statistics
    included): freezing the layers or statistics of a random network is no fair scratch start."""
    if cfg.init == "scratch":
        return {"bn": "train", "frozen_layers": -1}
    return {"bn": cfg.bn, "frozen_layers": cfg.frozen_layers}


def source_datasets(
    params: Params, manifest: str | Path, split: str = "train"
) -> list[dict[str, Any]]:
    """One ``ManifestDetDataset`` config per trained dataset, with its modality's training
    pipeline; on the ``train`` split each keeps its ``finetune.label_fraction`` of the images
    (seeded by ``seed``, nested across fractions)."""
    cfg = params.finetune
    out = []
    for ds in datasets_of(params):
        m = cfg.modalities[DATASETS[ds].modality]
        fraction = cfg.label_fraction.get(ds, 1.0) if split == "train" else 1.0
        out.append(
            {
                "type": "ManifestDetDataset",
                "manifest": str(manifest),
                "dataset": ds,
                "split": split,
                "fraction": fraction,
                "fraction_seed": params.seed,
                "ignore_difficult": params.evaluation.ignore_difficult,
                "pipeline": train_pipeline(
                    cfg.heads[ds].box_type,
                    m.image_size,
                    m.hflip,
                    m.vflip,
                    m.rot90,
                    source_spec(params),
                    m.rotate,
                    m.rotate_range,
                    ds,
                    m.crop,
                ),
            }
        )
    return out


def schedule(params: Params) -> list[dict[str, Any]]:
    """Linear warmup from ``warmup_ratio`` x lr, then x ``lr_gamma`` at each ``lr_steps`` point
    (``lr_schedule: step``) or a cosine from lr to ``min_lr_ratio`` x lr over the remaining
    iterations (``cosine``)."""
    cfg = params.finetune
    out: list[dict[str, Any]] = []
    warm = min(cfg.warmup_iters, cfg.iters)
    if warm > 0:
        out.append(
            {
                "type": "LinearLR",
                "start_factor": max(cfg.warmup_ratio, 1e-6),
                "by_epoch": False,
                "begin": 0,
                "end": warm,
            }
        )
    if cfg.lr_schedule == "cosine":
        if warm < cfg.iters:
            out.append(
                {
                    "type": "CosineAnnealingLR",
                    "by_epoch": False,
                    "begin": warm,
                    "end": cfg.iters,
                    "T_max": cfg.iters - warm,
                    "eta_min_ratio": cfg.min_lr_ratio,
                }
            )
        return out
    milestones = sorted({max(1, round(f * cfg.iters)) for f in cfg.lr_steps})
    if milestones:
        out.append(
            {
                "type": "MultiStepLR",
                "by_epoch": False,
                "begin": 0,
                "end": cfg.iters,
                "milestones": milestones,
                "gamma": cfg.lr_gamma,
            }
        )
    return out


def optim_wrapper_config(params: Params, device: str) -> dict[str, Any]:
    cfg = params.finetune
    return {
        "type": "GuardedOptimWrapper",
        "constructor": "BabelRSOptimWrapperConstructor",
        "optimizer": {
            "type": "AdamW",
            "lr": cfg.lr,
            "betas": (0.9, 0.999),
            "weight_decay": cfg.weight_decay,
        },
        "precision": cfg.precision,
        "device_type": device,
        "max_norm": cfg.clip_grad_norm,
        "paramwise_cfg": {
            "encoder_lr_scale": cfg.encoder_lr_scale,
            "layer_decay": cfg.layer_decay,
        },
    }


def runner_config(
    params: Params,
    manifest: str | Path,
    work_dir: str | Path,
    norm: Norm,
    *,
    pretrained_dir: str | Path | None = None,
    arch: dict[str, Any] | None = None,
    device: str = "cpu",
    resume: bool = True,
    quiet: bool = True,
    world_size: int = 1,
) -> dict[str, Any]:
    """The full mmengine ``Runner`` config of a fine-tuning run. With ``world_size`` > 1 it is
    mmengine's ``pytorch`` launcher (under torchrun) and each process loads its share of the
    global ``finetune.batch_size``."""
    from babelrs_core.distributed import backend_for

    cfg = params.finetune
    ratios = [cfg.source_ratio[ds] for ds in datasets_of(params)]
    local_batch = cfg.batch_size // world_size  # params validation: a multiple of world x ratio
    return {
        "model": model_config(params, norm, pretrained_dir=pretrained_dir, arch=arch),
        "work_dir": str(work_dir),
        "train_dataloader": {
            "batch_size": local_batch,
            "num_workers": params.images.loader_workers,
            "persistent_workers": params.images.loader_workers > 0,
            "sampler": {
                "type": "MultiSourceRatioSampler",
                "batch_size": local_batch,
                "source_ratio": ratios,
                "seed": params.seed,
            },
            "dataset": {
                "type": "ConcatDataset",
                "ignore_keys": ["classes", "dataset", "modality"],
                "datasets": source_datasets(params, manifest),
            },
            "collate_fn": {"type": "pseudo_collate"},
        },
        "train_cfg": {
            "type": "IterBasedTrainLoop",
            "max_iters": cfg.iters,
            "val_interval": cfg.iters + 1,
        },
        "optim_wrapper": optim_wrapper_config(params, device),
        "param_scheduler": schedule(params),
        "default_hooks": {
            "runtime_info": {"type": "RuntimeInfoHook"},
            "timer": {"type": "IterTimerHook"},
            "logger": {"type": "LoggerHook", "interval": cfg.log_every},
            "param_scheduler": {"type": "ParamSchedulerHook"},
            "checkpoint": {
                "type": "CheckpointHook",
                "interval": cfg.checkpoint_every,
                "by_epoch": False,
                "max_keep_ckpts": cfg.keep_checkpoints,
                "save_last": True,
                "backend_args": {"backend": ATOMIC_BACKEND},  # temp file + rename
            },
        },
        "custom_hooks": [{"type": "GradCosineHook", "interval": cfg.grad_cosine_every}],
        "log_processor": {"type": "LogProcessor", "window_size": cfg.log_every, "by_epoch": False},
        # no scalar files from mmengine's visualizer: metrics.jsonl is ours (and tracking hooks)
        "visualizer": {"type": "Visualizer", "vis_backends": []},
        "env_cfg": {
            "cudnn_benchmark": False,
            "mp_cfg": {"mp_start_method": "fork", "opencv_num_threads": 0},
            "dist_cfg": {"backend": backend_for(device, params.distributed.backend)},
        },
        "randomness": {"seed": params.seed, "deterministic": False},
        "default_scope": "mmdet",
        "log_level": "WARNING" if quiet else "INFO",
        "launcher": "pytorch" if world_size > 1 else "none",
        "resume": resume,
        "load_from": None,
    }
