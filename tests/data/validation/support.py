"""What the validation tests share: :class:`Data` (a private copy of the fake dataset, validated
through the stage) and helpers that find a failing check and the example naming a file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from babelrs_core.config import Params
from babelrs_core.data.manifest import read_manifest, write_manifest
from babelrs_core.data.validation.report import DataValidationError, Failure, ValidationReport
from babelrs_core.data.validation.stage import run_validation
from tests.data import fake_data


class Data:
    """A private copy of the fake dataset."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw = root / "raw"
        self.manifest = root / "manifest" / "fake.parquet"
        self.out = root / "out"
        self.roots = {
            "sardet": self.raw / "SARDet_100K",
            "dota": self.raw / "DOTA",
            "dronevehicle": self.raw / "DroneVehicle",
        }

    def edit(self, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        """Rewrite the manifest through ``fn`` (absolute paths in, relative paths out)."""
        write_manifest(fn(read_manifest(self.manifest)), self.manifest)

    def validate(self, params: Params | None = None, raw: bool = False) -> ValidationReport:
        return run_validation(
            params or fake_data.params(),
            manifest=self.manifest,
            out_dir=self.out,
            raw_roots=self.roots if raw else None,
        )

    def fails(self, params: Params | None = None, raw: bool = False) -> ValidationReport:
        with pytest.raises(DataValidationError) as info:
            self.validate(params, raw)
        return info.value.report


#: For tests of manifest rules: the image suite has its own tests (and decoding costs time).
ROWS_ONLY = fake_data.params(validation={"image_checks": False})


def failure(report: ValidationReport, check: str) -> Failure:
    """The failure of ``check`` (exact id or id prefix); a helpful error when absent."""
    found = [f for f in report.failures if f.check == check or f.check.startswith(check + ".")]
    assert found, f"{check} did not fail; failures: {[f.check for f in report.failures]}"
    return found[0]


def named(failure_: Failure, *words: str) -> str:
    """The first example that contains every word (file names, values); fails otherwise."""
    for example in failure_.examples:
        if all(w in example for w in words):
            return example
    raise AssertionError(f"no example of {failure_.check} mentions {words}: {failure_.examples}")
