"""Checkpoints of the detector: mmengine's training checkpoints, checked before resuming, and the
exported inference checkpoint (``detector.json`` + ``detector.safetensors``).

Layout of a fine-tuning output folder (``paths.finetune_out``)::

    detector.json          format babelrs-detector/1: model config (rebuilds the network without
                           any pretrained file), datasets and class names, normalisation, image
                           sizes, init, sha256 of the weights
    detector.safetensors   final weights (state dict), loaded with strict keys
    metrics.jsonl          training metrics every finetune.log_every iterations
    train.json             run summary (timing, losses, non-finite steps, settings)
    run.json               fingerprint of the run-shaping params (resume refuses a different run)
    checkpoints/           mmengine work_dir: iter_N.pth, last_checkpoint, logs

Every file our code loads is read safely: safetensors for weights, and ``torch.load(...,
weights_only=True)`` (with mmengine's small allow-list of numpy / log-buffer types) to check a
training checkpoint before mmengine resumes from it. A damaged file raises
:class:`DetectorCheckpointError` naming it. Importing this module also routes every mmengine
checkpoint loader through :func:`babelrs_core.io.safe_load.strict_torch_load` (mmengine's own
loader would fall back to an unsafe unpickle), and fine-tuning hands mmengine the verified path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import torch
from torch import nn

from babelrs_core.errors import BabelrsError
from babelrs_core.io import safe_load
from babelrs_core.io.atomic import atomic_path, write_bytes, write_json
from babelrs_core.io.hashing import file_sha256
from babelrs_core.models.encoders import LvsaRecord, NormStats

DETECTOR_FORMAT = "babelrs-detector/1"
DETECTOR_JSON = "detector.json"
DETECTOR_WEIGHTS = "detector.safetensors"


class HeadInfo(TypedDict):
    """One entry of ``detector.json``'s ``datasets``: a dataset head and its classes."""

    modality: str
    box_type: NotRequired[str]  # hbox | obox; readers default to hbox
    head: NotRequired[str]  # finetune.heads.<dataset>.type
    classes: list[str]  # label index -> the dataset's class name
    soi_names: list[str]  # label index -> the SOI-Det union class name


class ModalityInfo(NormStats):
    """One entry of ``detector.json``'s ``modalities``: input size and normalisation."""

    image_size: int
    source: str  # where mean / std came from (params / encoder / data / imagenet)


class PretrainRef(TypedDict):
    """``detector.json``'s ``pretrain``: the pretraining output the encoder started from."""

    dir: str | None
    sha256: str | None  # of its encoder.json
    steps: int | None
    lvsa: LvsaRecord | None


class DetectorInfo(TypedDict):
    """``detector.json``: what rebuilds the network and what its users need to feed and read it
    (:func:`export_detector` adds ``format``, ``weights`` and their ``sha256``)."""

    model: dict[str, Any]  # the mmengine model config (backbone built from scratch)
    encoder: str
    init: str  # csia | imagenet | scratch
    pretrain: PretrainRef
    datasets: dict[str, HeadInfo]
    modalities: dict[str, ModalityInfo]
    iters: int
    finetune: dict[str, Any]  # params.finetune as trained
    seed: int
    format: NotRequired[str]
    weights: NotRequired[str]
    sha256: NotRequired[str]


class DetectorCheckpointError(BabelrsError, RuntimeError):
    """A detector checkpoint is missing, corrupted, or from a different run."""


#: mmengine file backend that CheckpointHook writes through (``backend_args``): the local file
#: system, but every file is written to a temporary sibling and renamed (a kill -9 or a full disk
#: mid-write leaves the previous checkpoints and no half-written one)
ATOMIC_BACKEND = "babelrs_atomic_local"


def _register_atomic_backend() -> None:
    from mmengine.fileio.backends import LocalBackend, register_backend
    from mmengine.fileio.backends.registry_utils import backends

    if ATOMIC_BACKEND in backends:
        return

    class AtomicLocalBackend(LocalBackend):
        def put(self, obj: bytes, filepath: str | os.PathLike[str]) -> None:
            write_bytes(filepath, obj)

        def put_text(
            self, obj: str, filepath: str | os.PathLike[str], encoding: str = "utf-8"
        ) -> None:
            write_bytes(filepath, obj.encode(encoding))

    register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


_register_atomic_backend()
safe_load.install()


def safe_load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an mmengine checkpoint with ``weights_only=True``; a damaged file raises clearly."""
    from mmengine.runner.checkpoint import get_torch_safe_globals

    path = Path(path)
    if not path.exists():
        raise DetectorCheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(get_torch_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DetectorCheckpointError(
            f"{path}: corrupted or unsafe checkpoint ({type(exc).__name__}: {exc}); delete it (and "
            f"its line in {path.parent / 'last_checkpoint'}) to resume from an older one, or run "
            "without resume"
        ) from None
    missing = [k for k in ("meta", "state_dict", "optimizer") if k not in state]
    if missing:
        raise DetectorCheckpointError(f"{path}: incomplete checkpoint (missing {missing})")
    return state


def latest_training_checkpoint(work_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint mmengine would resume from (``last_checkpoint``), or ``None``."""
    marker = Path(work_dir) / "last_checkpoint"
    if not marker.exists():
        return None
    name = marker.read_text().strip()
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute():
        path = Path(work_dir) / path
    if not path.exists():  # the folder moved: look beside the marker
        path = Path(work_dir) / Path(name).name
    return path


def save_weights(model: nn.Module, target: str | os.PathLike[str]) -> str:
    """Write the model's state dict as safetensors atomically; return its sha256."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": DETECTOR_FORMAT})
    return file_sha256(target)


def export_detector(
    model: nn.Module, out: str | os.PathLike[str], info: DetectorInfo
) -> DetectorInfo:
    """Write ``detector.safetensors``, then ``detector.json`` (``info``, format, sha256)."""
    out = Path(out)
    digest = save_weights(model, out / DETECTOR_WEIGHTS)
    meta: DetectorInfo = {
        **info,
        "format": DETECTOR_FORMAT,
        "weights": DETECTOR_WEIGHTS,
        "sha256": digest,
    }
    write_json(out / DETECTOR_JSON, meta)
    return meta


def read_detector_json(source: str | os.PathLike[str]) -> tuple[Path, DetectorInfo]:
    """(folder, description) of an exported detector (folder or its ``detector.json``)."""
    source = Path(source)
    meta_path = source / DETECTOR_JSON if source.is_dir() or not source.suffix else source
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{meta_path}: detector description not found (run fine-tuning first)"
        )
    try:
        info = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DetectorCheckpointError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != DETECTOR_FORMAT:
        raise DetectorCheckpointError(f"{meta_path}: not a {DETECTOR_FORMAT} file")
    return meta_path.parent, cast(DetectorInfo, info)


def load_weights(
    model: nn.Module, folder: str | os.PathLike[str], info: DetectorInfo, device: str = "cpu"
) -> None:
    """Load ``detector.safetensors`` strictly after checking its sha256 against the JSON."""
    from safetensors.torch import load_file

    path = Path(folder) / info["weights"]
    if not path.exists():
        raise DetectorCheckpointError(f"{path}: detector weights not found")
    if info.get("sha256") and file_sha256(path) != info["sha256"]:
        raise DetectorCheckpointError(
            f"{path}: sha256 does not match {DETECTOR_JSON} (corrupted or replaced file)"
        )
    try:
        state = load_file(str(path), device=device)
    except Exception as exc:
        raise DetectorCheckpointError(f"{path}: unreadable weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DetectorCheckpointError(
            f"{path}: weights do not fit the model in {DETECTOR_JSON}: missing "
            f"{sorted(missing)[:6]}, unexpected {sorted(unexpected)[:6]}"
        )
