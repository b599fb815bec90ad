"""Suite-wide isolation: no test leaks MLflow's process-wide tracking URI into the next one, and
the suite leaves the working tree as it found it (no new untracked or modified file, no MLflow
default store at the repo root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a test reaching MLflow with no URI would create at the root (both git-ignored)
STRAY = ("mlflow.db", "mlruns")
_TREE = pytest.StashKey[set[str] | None]()


def _tree_state() -> set[str] | None:
    """``git status --porcelain`` lines plus stray MLflow stores; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return set(out.stdout.splitlines()) | {f"stray {p}" for p in STRAY if (ROOT / p).exists()}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_TREE] = _tree_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if the tests left files in the checkout (they must write under tmp_path)."""
    before, after = session.config.stash.get(_TREE, None), _tree_state()
    if before is None or after is None:
        return
    left = sorted(after - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("the test suite left these in the working tree (git status):",
                                red=True)  # fmt: skip
            for line in left:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_isolated() -> Iterator[None]:
    """MLflow's ``set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ``;
    restore both after every test (a leaked URI would redirect later tests' runs)."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    try:
        from mlflow.tracking._tracking_service import utils
    except ImportError:  # pragma: no cover - mlflow is a hard dependency
        return
    utils._tracking_uri = None
