"""The pipeline as a list of named stages (raster-vision style): one spec, every runner.

Each :class:`StageSpec` holds the function of :mod:`babelrs_core.stages` that does the work, the
params keys it reads (no more), the paths it reads and writes, and whether it wants a GPU. From this
one list come: the ``babelrs stage <name>`` commands, ``dvc.yaml`` (:mod:`.dvc`; a test fails if
the committed file drifts), the Prefect tasks with their cache keys (params subset + content hashes
of the inputs) and the ablation's runs; all of them run a stage through
:func:`babelrs_core.pipeline.runner.execute_stage`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babelrs_core import stages
from babelrs_core.concepts import DATASETS
from babelrs_core.config import Params
from babelrs_core.io.hashing import path_hash


@dataclass(frozen=True)
class Curve:
    """A DVC top-level plot: columns ``y`` against ``x`` of CSV files a stage writes."""

    title: str
    x: str
    y: tuple[str, ...]
    files: tuple[str, ...]  # paths (with placeholders) inside the stage's outputs


@dataclass(frozen=True)
class StageSpec:
    """What one stage reads and writes. Paths may use ``{paths.<key>}`` placeholders."""

    name: str
    func: Callable[..., Any]  # the function of babelrs_core.stages that does the work
    help: str
    params: tuple[str, ...]  # params.yaml keys (dotted) the stage reads
    code: tuple[str, ...]  # source folders/files whose change invalidates the stage
    deps: tuple[str, ...] = ()  # data inputs
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()  # JSON metric files (DVC ``metrics``, cache: false)
    plots: tuple[str, ...] = ()
    curves: tuple[Curve, ...] = ()  # DVC top-level plots of files inside the outputs
    gpu: bool = False
    distributed: bool = False  # runs under torchrun when params.distributed asks for > 1 process
    retries: int = 0  # Prefect retries for transient failures (never for bad data)
    extra: dict[str, Any] = field(default_factory=dict)

    def resolve(self, template: str, params: Params) -> str:
        """Fill ``{section.key}`` placeholders with the params values (paths, mostly)."""
        return _PLACEHOLDER.sub(lambda m: str(_lookup(params, m.group(1))), template)

    def inputs(self, params: Params) -> list[Path]:
        """Data inputs as paths (for cache keys and lineage)."""
        return [Path(self.resolve(d, params)) for d in self.deps]

    def outputs(self, params: Params) -> list[Path]:
        """Outputs as paths."""
        return [Path(self.resolve(o, params)) for o in (*self.outs, *self.metrics)]


_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


#: placeholders derived from several params keys
DERIVED: dict[str, Callable[[Params], Any]] = {
    # what the training and evaluation stages read pixels from (images.source)
    "images.pixels": lambda p: p.paths.raw if p.images.source == "files" else p.shards.dir,
}


def _lookup(params: Params, key: str) -> Any:
    if key in DERIVED:
        return str(DERIVED[key](params))
    node: Any = params.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"stage spec names unknown params key {key!r}")
        node = node[part]
    return node


def params_subset(params: Params, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``keys`` (dotted) in ``params``, as plain JSON-able data."""
    return {key: _lookup(params, key) for key in keys}


def cache_key(spec: StageSpec, params: Params, hash_path: Callable[[Path], str] = path_hash) -> str:
    """Key that changes when the stage's params subset, code or data inputs change."""
    blob = {
        "stage": spec.name,
        "params": params_subset(params, spec.params),
        "inputs": {
            str(p): hash_path(p) if p.exists() else "missing"
            for p in [*spec.inputs(params), *map(Path, spec.code)]
        },
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _artifacts(folder: str, *names: str) -> dict[str, Any]:
    """``extra`` of a stage that logs ``names`` inside ``folder`` as MLflow artifacts."""
    return {"artifacts": tuple(f"{folder}/{name}" for name in names)}


PIPELINE: list[StageSpec] = [
    StageSpec(
        name="generate",
        func=stages.generate,
        help="Render SOI-mini in the real SARDet / DOTA / DroneVehicle formats.",
        params=("seed", "paths.raw", "soi_mini"),
        code=("babelrs_core/data/synth",),
        outs=("{paths.raw}",),
    ),
    StageSpec(
        name="import",
        func=stages.import_data,
        help="Import the datasets (real formats) into the manifest.",
        params=("paths.raw", "paths.manifest", "paths.captions", "importers"),
        code=(
            "babelrs_core/data/formats",
            "babelrs_core/data/importing.py",
            "babelrs_core/data/captions.py",
        ),
        deps=("{paths.raw}",),
        outs=("{paths.manifest}", "{paths.captions}"),
    ),
    StageSpec(
        name="validate",
        func=stages.validate,
        help="Great Expectations suites over the manifest and its images; stops bad data.",
        params=("paths.manifest", "paths.captions", "validation"),
        code=(
            "babelrs_core/data/validation",
            "babelrs_core/data/integrity.py",
            "babelrs_core/data/captions.py",
        ),
        deps=("{paths.manifest}", "{paths.captions}", "{paths.raw}"),
        outs=("{validation.out_dir}/report.json", "{validation.out_dir}/report.md"),
        metrics=("{validation.out_dir}/summary.json",),
        # Data Docs (validation.data_docs, on by default): an MLflow artifact, not a DVC output
        extra={"artifacts": ("{validation.out_dir}/report.md", "{validation.data_docs_dir}")},
    ),
    StageSpec(
        name="shard",
        func=stages.shard,
        help="Pack the images into content-addressed tar shards + index (what DVC moves).",
        params=("paths.manifest", "shards"),
        code=("babelrs_core/data/shards.py",),
        deps=("{paths.manifest}", "{paths.raw}", "{validation.out_dir}/summary.json"),
        outs=("{shards.dir}",),
    ),
    StageSpec(
        name="pretrain",
        func=stages.pretrain,
        help="CSIA + LVSA: align the shared vision encoder to language (encoder weights).",
        params=(
            "seed",
            "paths.manifest",
            "paths.captions",
            "paths.pretrain_out",
            "images.source",
            "model",
            "pretrain",
            "distributed",
        ),
        code=("babelrs_core/models", "babelrs_core/pretrain", "babelrs_core/data/integrity.py"),
        deps=(
            "{paths.manifest}",
            "{paths.captions}",
            "{images.pixels}",
            "{validation.out_dir}/summary.json",
        ),
        outs=("{paths.pretrain_out}",),
        extra=_artifacts(
            "{paths.pretrain_out}",
            "metrics.jsonl",
            "metrics.json",
            "config.yaml",
            "loss_curves.png",
        ),
        gpu=True,
        distributed=True,
        retries=1,
    ),
    StageSpec(
        name="finetune",
        func=stages.finetune,
        help="Fine-tune the shared multi-sensor detector (mmdet, one head per dataset).",
        params=(
            "seed",
            "paths.manifest",
            "paths.pretrain_out",
            "paths.finetune_out",
            "images.source",
            "images.loader_workers",
            "model",
            "finetune",
            "evaluation.ignore_difficult",
            "distributed",
        ),
        code=("babelrs_core/detector", "babelrs_core/models", "babelrs_core/data/integrity.py"),
        deps=("{paths.manifest}", "{images.pixels}", "{paths.pretrain_out}"),
        outs=("{paths.finetune_out}",),
        curves=(
            Curve(
                "validation mAP vs iteration",
                "iter",
                (*DATASETS, "hmap"),
                ("{paths.finetune_out}/validation.csv",),
            ),
        ),
        extra=_artifacts(
            "{paths.finetune_out}",
            "validation.csv",
            "metrics.jsonl",
            "train.json",
            "config.yaml",
            "mmengine_config.py",
            "loss_curves.png",
        ),
        gpu=True,
        distributed=True,
        retries=1,
    ),
    StageSpec(
        name="evaluate",
        func=stages.evaluate,
        help="SOI-Det metrics: per-dataset AP@50 / mAP, overall class mean, H-mAP, PR curves.",
        params=(
            "paths.manifest",
            "paths.finetune_out",
            "paths.eval_out",
            "images.source",
            "evaluation",
        ),
        code=("babelrs_core/evaluation", "babelrs_core/detector"),
        deps=("{paths.manifest}", "{images.pixels}", "{paths.finetune_out}"),
        outs=(
            "{paths.eval_out}/plots",
            "{paths.eval_out}/predictions",
            "{paths.eval_out}/per_class.csv",
            "{paths.eval_out}/per_class.md",
            "{paths.eval_out}/eval_info.json",
            "{paths.eval_out}/orientation.json",
        ),
        metrics=("{paths.eval_out}/metrics/eval.json",),
        curves=(
            Curve(
                "precision-recall at IoU 0.5 (class mean)",
                "recall",
                ("precision",),
                tuple(f"{{paths.eval_out}}/plots/pr_{d}.csv" for d in DATASETS),
            ),
        ),
        extra=_artifacts("{paths.eval_out}", "plots", "per_class.md", "orientation.json"),
    ),
    StageSpec(
        name="register",
        func=stages.register,
        help="Log the detector as an MLflow pyfunc model, register a version, run the gate.",
        params=(
            "paths.manifest",
            "paths.finetune_out",
            "paths.eval_out",
            "evaluation",
            "tracking",
            "registry",
        ),
        code=("babelrs_core/registry",),
        deps=(
            "{paths.finetune_out}",
            "{paths.eval_out}/metrics/eval.json",
            "{paths.eval_out}/eval_info.json",
        ),
        metrics=("{registry.out_dir}/registration.json",),
    ),
]

STAGES: dict[str, StageSpec] = {s.name: s for s in PIPELINE}


def stage(name: str) -> StageSpec:
    """The spec called ``name``; a clear error lists the stages."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None
