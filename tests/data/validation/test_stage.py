"""The validate stage as the pipeline and the CLI run it (babelrs_core/data/validation/stage.py):
clean data passes and writes its report, the image suite can be switched off, the train classes
follow ``validation.train_classes``, bad data raises ``DataValidationError`` and the CLI exits 1
naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babelrs_core import stages
from babelrs_core.cli import app
from babelrs_core.data.validation.report import DataValidationError
from tests.data import fake_data
from tests.data.validation.support import Data, failure, named


def test_clean_manifest_passes_and_writes_reports(data: Data) -> None:
    report = data.validate()
    assert report.passed and not report.failures
    assert (report.rows, report.images, report.objects) == (12, 9, 12)
    assert report.checks >= 40
    summary = json.loads((data.out / "summary.json").read_text())
    assert summary == report.summary() and summary["passed"] is True
    assert json.loads((data.out / "report.json").read_text())["failed_checks"] == 0
    assert "PASSED" in (data.out / "report.md").read_text()
    data.validate()
    assert json.loads((data.out / "summary.json").read_text()) == summary  # deterministic metric


def test_clean_raw_folders_pass(data: Data) -> None:
    report = data.validate(raw=True)
    assert report.passed
    assert report.images == 9


def test_image_checks_can_be_switched_off(data: Data) -> None:
    (data.roots["sardet"] / "JPEGImages/train/t00001.png").unlink()
    report = data.validate(fake_data.params(validation={"image_checks": False}))
    assert report.passed


def test_train_classes_from_soi_mini_params(data: Data) -> None:
    params = fake_data.params(validation={"train_classes": "soi_mini"})
    f = failure(data.fails(params), "train_classes")
    named(f, "dota class 'harbor' has no object in the train split")  # in soi_mini.dota.classes


def test_stage_raises_before_anything_downstream(data: Data) -> None:
    (data.roots["dota"] / "train/images/Pt000.png").unlink()
    with pytest.raises(DataValidationError, match="image_exists"):
        stages.validate(fake_data.params(), data.manifest, data.out, progress=False)


def test_cli_exit_codes_and_messages(data: Data, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(fake_data.PARAMS))  # JSON is YAML
    runner = CliRunner()
    args = ["data", "validate", "-p", str(params), "--manifest", str(data.manifest), "-q"]
    ok = runner.invoke(app, [*args, "--out", str(data.out)])
    assert ok.exit_code == 0, ok.output
    assert "data validation passed" in ok.output

    (data.roots["dronevehicle"] / "val/valimgr/00001.jpg").unlink()
    bad = runner.invoke(app, [*args, "--out", str(data.out)])
    assert bad.exit_code == 1
    assert "valimgr/00001.jpg" in bad.output and "missing image" in bad.output

    label = data.roots["dota"] / "train/labelTxt/Pt000.txt"
    label.write_text("x y z\n")
    raw = runner.invoke(app, [*args, "--raw", str(data.raw), "--out", str(data.out)])
    assert raw.exit_code == 1
    assert "DOTA/train/labelTxt/Pt000.txt:1" in raw.output
