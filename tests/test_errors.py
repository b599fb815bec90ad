"""One error root: every error class babelrs defines is a ``BabelrsError`` (so the CLI and the
flow's retry policy read ``exit_code`` / ``transient`` instead of listing types)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from babelrs_core.errors import BabelrsError, BadInputError

ROOT = Path(__file__).resolve().parents[1]


def _error_classes() -> list[type]:
    found = []
    for path in sorted((ROOT / "babelrs_core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        names = [n for n in names if n.endswith(("Error", "Exception"))]
        if names:
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found += [getattr(importlib.import_module(module), n) for n in names]
    return found


def test_every_babelrs_error_has_the_one_root() -> None:
    classes = _error_classes()
    assert len(classes) >= 15
    outside = [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, BabelrsError)]
    assert outside == []


def test_bad_input_is_never_retried_and_exits_2() -> None:
    from babelrs_core.config import ConfigError
    from babelrs_core.data.formats.errors import FormatError
    from babelrs_core.io.atomic import DiskFullError

    for cls in (ConfigError, FormatError):
        assert issubclass(cls, BadInputError) and issubclass(cls, ValueError)
        assert cls.transient is False and cls.exit_code == 2
    assert DiskFullError.exit_code == 1 and issubclass(DiskFullError, OSError)
