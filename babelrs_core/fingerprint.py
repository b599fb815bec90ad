"""Run fingerprints: the params that shape a training run, stored with its checkpoints and
compared before a resume, so that a rerun with other params starts over or is refused clearly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from babelrs_core.config import flatten_dict

#: The params that shape a run (JSON values, nested or dotted keys).
Fingerprint = dict[str, Any]


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def fingerprint_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any], most: int = 6
) -> str | None:
    """``None`` when the two are equal as JSON; else ``key: saved -> current`` for every dotted
    key whose value differs (the first ``most`` of them, then how many more)."""
    old, new = (json.loads(json.dumps(fp)) for fp in (saved, current))
    if old == new:
        return None
    flat_old, flat_new = flatten_dict(old), flatten_dict(new)
    keys = _differing(flat_old, flat_new)
    if not keys:  # they differ only by an empty mapping, which flattening drops
        flat_old, flat_new, keys = old, new, _differing(old, new)
    shown = ", ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")
