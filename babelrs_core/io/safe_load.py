"""The one way a torch checkpoint is opened: ``torch.load(weights_only=True)``, never a pickle.

mmengine opens checkpoints itself (``Runner.resume`` -> ``Runner.load_checkpoint`` ->
``CheckpointLoader.load_checkpoint`` -> ``load_from_local`` and the other schemes ->
``mmengine.runner.checkpoint._safe_torch_load``), and its ``_safe_torch_load`` falls back to
a full unpickle (``weights_only`` off, which can run any code) when the safe load fails.
:func:`install` replaces that one function, which every mmengine loader calls, by
:func:`strict_torch_load`: the safe load with mmengine's small allow-list, no fallback, and a
:class:`UnsafeCheckpointError` naming the file. It is installed when
:mod:`babelrs_core.detector.checkpoint` is imported, i.e. before any runner exists.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from babelrs_core.errors import BabelrsError


class UnsafeCheckpointError(BabelrsError, RuntimeError):
    """A checkpoint is damaged or holds more than tensors and plain data (it is never unpickled)."""


def _display(file: Any) -> str:
    """The file's absolute path (a relative name is resolved against the working directory)."""
    if isinstance(file, str | os.PathLike):
        return os.path.abspath(os.fspath(file))
    return f"<{type(file).__name__}>"


def allowed_globals() -> list[Any]:
    """The classes a training checkpoint may reference: mmengine's numpy / log-buffer allow-list."""
    from mmengine.runner.checkpoint import get_torch_safe_globals

    return list(get_torch_safe_globals())


def strict_torch_load(file: Any, map_location: Any = None, weights_only: bool | None = None) -> Any:
    """``torch.load(file, weights_only=True)`` with mmengine's allow-list; nothing else.

    Drop-in for mmengine's ``_safe_torch_load`` (same arguments). Turning ``weights_only`` off is
    refused before the file is read; any failure (damage, or a global outside the allow-list, i.e. a
    pickle that would run code) raises :class:`UnsafeCheckpointError` naming the file."""
    name = _display(file)
    if weights_only is False:
        raise UnsafeCheckpointError(
            f"{name}: refusing to load with weights_only off (a full unpickle can run any code)"
        )
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UnsafeCheckpointError(f"{name}: checkpoint not found") from None
    except Exception as exc:
        raise UnsafeCheckpointError(
            f"{name}: corrupted or unsafe checkpoint ({type(exc).__name__}: {exc}); it was not "
            "unpickled"
        ) from None


def install() -> None:
    """Make every mmengine checkpoint loader use :func:`strict_torch_load` (idempotent)."""
    from mmengine.runner import checkpoint as mm_checkpoint

    mm_checkpoint._safe_torch_load = strict_torch_load


def installed() -> bool:
    """Whether mmengine's loaders go through :func:`strict_torch_load`."""
    from mmengine.runner import checkpoint as mm_checkpoint

    return mm_checkpoint._safe_torch_load is strict_torch_load
