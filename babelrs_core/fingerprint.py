"""Run fingerprints: the params that shape a training run, stored with its checkpoints and
compared before a resume, so that a rerun with other params starts over or is refused clearly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from babelrs_core.config import flatten_dict

#: The params that shape a run (JSON values, nested or dotted keys).
Fingerprint = dict[str, Any]


def fingerprint_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any], most: int = 6
) -> str | None:
    """``key: saved -> current`` for every dotted key whose JSON value differs (the first
    ``most`` of them, then how many more), or ``None`` when the two agree."""
    old, new = (flatten_dict(json.loads(json.dumps(fp))) for fp in (saved, current))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not keys:
        return None
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")
