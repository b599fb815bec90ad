"""Suite-wide isolation: no test leaks MLflow's process-wide tracking URI into the next one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
