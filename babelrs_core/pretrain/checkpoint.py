"""Training checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds the model and optimizer / scheduler / grad-scaler states, the step, the RNG
states (as tensors and plain types) and a fingerprint of the params that shape the run, so that a
rerun resumes exactly where the last one stopped, or refuses clearly.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch

from babelrs_core.errors import BabelrsError
from babelrs_core.fingerprint import Fingerprint, fingerprint_changes
from babelrs_core.io.atomic import atomic_path

FORMAT = 1
_NAME = re.compile(r"^step_(\d{7})\.pt$")
REQUIRED = ("format", "step", "model", "optimizer", "scheduler", "rng", "fingerprint")


class CheckpointError(BabelrsError, RuntimeError):
    """A checkpoint is corrupted, incomplete or from a different configuration."""


class NumpyRng(TypedDict):
    """numpy's global MT19937 state, as a tensor and plain numbers."""

    keys: torch.Tensor
    pos: int
    has_gauss: int
    cached_gaussian: float


class RngState(TypedDict):
    """Every random generator a training step draws from."""

    torch: torch.Tensor
    cuda: list[torch.Tensor]
    numpy: NumpyRng
    python: list[Any]  # random.getstate() as [version, list of ints, gauss]


class TrainingState(TypedDict):
    """What a pretraining checkpoint holds besides its format and step."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]  # empty without loss scaling
    rng: RngState
    fingerprint: Fingerprint
    nonfinite_steps: int


class Checkpoint(TrainingState):
    """A checkpoint file's content."""

    format: int
    step: int


def checkpoint_path(folder: str | os.PathLike[str], step: int) -> Path:
    return Path(folder) / f"step_{step:07d}.pt"


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, key=lambda step_path: step_path[0])]


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def rng_state() -> RngState:
    """All RNG states as tensors / plain types (loadable with ``weights_only=True``)."""
    # numpy's stub types the default call (legacy=True) as its dict overload; the global
    # RandomState is an MT19937, whose legacy state is this tuple
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: RngState) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    folder: str | os.PathLike[str], step: int, state: TrainingState, keep: int = 1
) -> Path:
    """Write ``state`` as ``step_NNNNNNN.pt`` atomically; keep only the newest ``keep`` files."""
    target = checkpoint_path(folder, step)
    payload: Checkpoint = {"format": FORMAT, "step": int(step), **state}
    with atomic_path(target, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a checkpoint safely; any damage raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        raise CheckpointError(
            f"{path}: corrupted or unreadable checkpoint ({type(exc).__name__}: {exc}); "
            f"delete it to restart from the previous checkpoint or from scratch"
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {missing}); delete it")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']} != {FORMAT}")
    return cast(Checkpoint, state)


def check_fingerprint(path: Path, saved: Fingerprint, current: Fingerprint) -> None:
    """Refuse to resume a run whose shaping params changed."""
    changes = fingerprint_changes(saved, current)
    if changes:
        raise CheckpointError(
            f"{path}: written with different params ({changes}); delete {path.parent} or run "
            f"without resume to start over"
        )


def resume_from(
    path: Path,
    fingerprint: Fingerprint,
    device: str | torch.device,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
) -> tuple[int, int]:
    """Load the training state of checkpoint ``path`` (refused when its fingerprint is not the
    run's) into the model, optimiser, schedule, loss scaler and random generators; returns the
    step it was written at and the non-finite steps counted so far."""
    state = load_checkpoint(path, map_location=device)
    check_fingerprint(path, state["fingerprint"], fingerprint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"]), int(state.get("nonfinite_steps", 0))


def training_state(
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    fingerprint: Fingerprint,
    nonfinite_steps: int,
) -> TrainingState:
    """What a pretraining checkpoint holds (what :func:`resume_from` reads back)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": rng_state(),
        "fingerprint": fingerprint,
        "nonfinite_steps": nonfinite_steps,
    }
