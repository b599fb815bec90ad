"""Numbers live in params.yaml, once (docs/testing.md): every default in babelrs_core/config.py
equals the shipped params.yaml, so a params file or test that leaves a key out gets the shipped
recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from babelrs_core.config import Params, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
MISSING = "<missing>"


def params_drift(defaults: Params, loaded: Params) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (default, loaded value) for every leaf whose value or type (1 vs 1.0) differs,
    or that only one side has (the other side shows ``<missing>``), sorted by key."""
    a, b = flatten(defaults), flatten(loaded)
    drift: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, MISSING), b.get(key, MISSING)
        if x != y or type(x) is not type(y):
            drift[key] = (x, y)
    return drift


def drift_message(drift: dict[str, tuple[Any, Any]], source: str = "params.yaml") -> str:
    """One line per drifted key: the default in config.py beside the value in ``source``."""
    width = max(len(k) for k in drift)
    lines = [
        f"{len(drift)} key(s) where the defaults in babelrs_core/config.py differ from {source} "
        f"(make the default equal {source}; {source} is the shipped recipe):"
    ]
    lines += [f"  {k:<{width}}  default {d!r}  {source} {v!r}" for k, (d, v) in drift.items()]
    return "\n".join(lines)


def test_defaults_equal_params_yaml() -> None:
    drift = params_drift(Params(), load_params(ROOT / "params.yaml"))
    assert not drift, drift_message(drift)


def test_planted_drift_is_reported_key_by_key(tmp_path: Path) -> None:
    """A params.yaml copy with one value changed and one key deleted: exactly those two keys."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["finetune"]["heads"]["dota"]["nms_pre"] = 500
    del data["orchestration"]["stage_timeout_s"]["register"]  # the default keeps it
    planted = tmp_path / "params.yaml"
    planted.write_text(yaml.safe_dump(data, sort_keys=False))

    drift = params_drift(Params(), load_params(planted))

    assert drift == {
        "finetune.heads.dota.nms_pre": (300, 500),
        "orchestration.stage_timeout_s.register": (1800.0, MISSING),
    }
    message = drift_message(drift)
    assert message.splitlines()[0].startswith("2 key(s) where the defaults")
    assert "finetune.heads.dota.nms_pre" in message and "default 300  params.yaml 500" in message
    assert "default 1800.0  params.yaml '<missing>'" in message


def test_type_drift_is_reported() -> None:
    """0 (int) on one side and 0.0 (float) on the other counts as drift too; typed fields are
    dumped as their type anyway, so this matters for free-form values such as ablation overrides."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["ablation"]["variants"]["tau0"]["pretrain"]["lvsa.tau"] = 0.0
    drift = params_drift(Params(), parse_params(data))
    assert drift == {"ablation.variants.tau0.pretrain.lvsa.tau": (0, 0.0)}
