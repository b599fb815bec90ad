"""mypy in ``make lint`` on all of ``babelrs_core/``: the ratchet of exempt modules reached zero,
so no module may be exempted again (no ``ignore_errors`` override in pyproject.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mypy_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_checks_the_whole_package() -> None:
    assert _mypy_config()["files"] == ["babelrs_core"]


def test_no_module_is_exempt_from_type_checking() -> None:
    overrides = _mypy_config().get("overrides", [])
    exempt = [o["module"] for o in overrides if o.get("ignore_errors")]
    assert exempt == [], f"modules exempt from mypy: {exempt}"
