"""Fixtures of the validation tests: one valid fake dataset (raw folders + manifest, from
``tests/data/fake_data.py``) per session, and a private copy of it per test to break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.data import fake_data
from tests.data.validation.support import Data


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One valid fake dataset (raw + manifest) per session; tests work on copies."""
    base = tmp_path_factory.mktemp("pristine")
    fake_data.make_dataset(base)
    return base


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Data:
    shutil.copytree(pristine, tmp_path / "d")
    return Data(tmp_path / "d")
