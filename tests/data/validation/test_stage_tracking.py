"""The tracked validate stage logs its GX Data Docs site (and report) as artifacts of its MLflow
run, when the data pass and when they fail (the run then ends FAILED, the docs still there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.data.manifest import read_manifest, write_manifest
from babelrs_core.data.validation.report import DataValidationError
from babelrs_core.pipeline import stage
from babelrs_core.pipeline.runner import execute_stage
from babelrs_core.tracking import Tracker
from tests.data import fake_data


def _artifacts(tracker: Tracker, run_id: str, path: str) -> set[str]:
    """Every artifact file under ``path`` of the run (recursively)."""
    out: set[str] = set()
    for info in tracker.client.list_artifacts(run_id, path):
        out |= _artifacts(tracker, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_validate_run_logs_the_data_docs_site(tmp_path: Path) -> None:
    _, manifest = fake_data.make_dataset(tmp_path / "data")
    out = tmp_path / "validation"
    params = fake_data.params(
        paths={"manifest": str(manifest), "raw": str(tmp_path / "data" / "raw")},
        validation={"data_docs": True, "out_dir": str(out), "data_docs_dir": str(out / "docs")},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker("test", uri, artifact_location=(tmp_path / "art").as_uri())

    result = execute_stage(stage("validate"), params, tracker=tracker, progress=False)
    assert result["passed"] and result["data_docs"] == str(out / "docs" / "index.html")
    logged = _artifacts(tracker, result["mlflow_run_id"], "validate")
    assert {"validate/report.md", "validate/summary.json", "validate/docs/index.html"} <= logged
    pages = {p.split("/")[3] for p in logged if p.startswith("validate/docs/validations/")}
    assert pages == {"manifest", "images"}  # one validation result per suite

    frame = read_manifest(manifest)
    write_manifest(frame.assign(x2=frame["x2"].where(frame.index != 3, 1000.0)), manifest)
    with pytest.raises(DataValidationError, match="box_inside_image"):
        execute_stage(stage("validate"), params, tracker=tracker, progress=False)
    failed = [
        r for r in tracker.client.search_runs([tracker.experiment_id]) if r.info.status == "FAILED"
    ]
    assert len(failed) == 1
    logged = _artifacts(tracker, failed[0].info.run_id, "validate")
    assert {"validate/report.md", "validate/docs/index.html"} <= logged
    page = next(p for p in logged if p.startswith("validate/docs/validations/manifest/"))
    local = tracker.client.download_artifacts(failed[0].info.run_id, page, str(tmp_path / "dl"))
    assert "Failed" in Path(local).read_text()
