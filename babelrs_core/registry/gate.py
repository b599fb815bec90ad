"""The promotion rule, as a pure function of two evaluations (``metrics/eval.json`` contents).

* No champion yet: promote if the challenger's H-mAP >= ``floor``.
* Otherwise: promote if challenger H-mAP - champion H-mAP >= ``margin`` **and** no dataset's mAP
  falls by more than ``max_drop`` (a dataset the champion is scored on and the challenger is not
  counts as a fall to 0). Scores are percent points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from babelrs_core.concepts import DATASETS


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and every number it used."""

    promote: bool
    reason: str
    challenger_hmap: float
    champion_hmap: float | None = None
    champion_version: str | None = None
    gain: float | None = None
    drops: dict[str, float] = field(default_factory=dict)  # dataset -> champion - challenger mAP
    margin: float = 0.0
    max_drop: float = 0.0
    floor: float = 0.0

    def as_tags(self) -> dict[str, str]:
        """``gate.*`` tags for the model version and the run (MLflow tag values are text)."""
        tags = {"gate.decision": "promoted" if self.promote else "rejected"}
        for key, value in asdict(self).items():
            if key in ("promote", "drops") or value is None:
                continue
            tags[f"gate.{key}"] = f"{value:.4f}" if isinstance(value, float) else str(value)
        for ds, drop in self.drops.items():
            tags[f"gate.drop.{ds}"] = f"{drop:.4f}"
        return tags


def dataset_maps(ev: dict[str, Any]) -> dict[str, float]:
    """Per-dataset mAP of an ``eval.json`` mapping."""
    return {k: float(v["map"]) for k, v in ev.items() if k in DATASETS and "map" in v}


def decide(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    margin: float,
    max_drop: float,
    floor: float,
    champion_version: str | None = None,
) -> Decision:
    """Apply the rule above to ``eval.json`` mappings (``champion`` None: no champion yet)."""
    hmap = float(challenger["overall"]["hmap"])
    rules: dict[str, Any] = {"margin": margin, "max_drop": max_drop, "floor": floor}
    if champion is None:
        ok = hmap >= floor
        rel = ">=" if ok else "<"
        reason = f"first version: H-mAP {hmap:.2f} {rel} floor {floor:.2f}"
        return Decision(ok, reason, challenger_hmap=hmap, **rules)
    champ_hmap = float(champion["overall"]["hmap"])
    mine, theirs = dataset_maps(challenger), dataset_maps(champion)
    drops = {ds: round(m - mine.get(ds, 0.0), 4) for ds, m in theirs.items()}
    gain = round(hmap - champ_hmap, 4)
    common: dict[str, Any] = {
        "challenger_hmap": hmap,
        **rules,
        "champion_hmap": champ_hmap,
        "champion_version": champion_version,
        "gain": gain,
    }
    too_much = {ds: d for ds, d in drops.items() if d > max_drop}
    vs = f"champion v{champion_version}" if champion_version else "champion"
    if gain < margin:
        reason = f"H-mAP gain {gain:+.2f} over {vs} ({champ_hmap:.2f}) is below margin {margin:.2f}"
        return Decision(False, reason, drops=drops, **common)
    if too_much:
        worst = ", ".join(f"{ds} -{d:.2f}" for ds, d in sorted(too_much.items()))
        reason = f"mAP drop beyond {max_drop:.2f} vs {vs}: {worst}"
        return Decision(False, reason, drops=drops, **common)
    reason = f"H-mAP gain {gain:+.2f} over {vs} >= margin {margin:.2f}; no drop > {max_drop:.2f}"
    return Decision(True, reason, drops=drops, **common)
