"""MLflow tracking against a real local store: batching, nesting, lineage, params, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.config import load_params
from babelrs_core.runner import run_stage
from babelrs_core.tracking import MetricBuffer, Tracker, log_step, redact

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return Tracker("test", uri, flush_every=50, artifact_location=(tmp_path / "art").as_uri())


def test_metric_buffer_sends_batches_not_scalars(tracker: Tracker) -> None:
    run_id = tracker.start("batch", {})
    with tracker.metric_sink(run_id) as sink:
        for step in range(100):
            log_step(step, {"loss": 1.0 / (step + 1), "lr": 0.1})
        log_step(100, {"loss": float("nan")})  # non-finite values are not logged
    assert isinstance(sink, MetricBuffer)
    assert sink.calls == 4  # 200 scalars, flushed every 50
    history = tracker.client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(100))
    log_step(0, {"loss": 1.0})  # outside a sink: a no-op, not an error


def test_run_stage_makes_a_child_run_with_params_subset_and_lineage(
    tracker: Tracker, tmp_path: Path
) -> None:
    params = load_params(
        ROOT / "params.yaml",
        {
            "paths.raw": str(tmp_path / "raw"),
            "soi_mini.sardet.splits": {"train": 1},
            "soi_mini.dota.splits": {"train": 1},
            "soi_mini.dronevehicle.splits": {"train": 1},
        },
    )
    parent = tracker.start("pipeline", {"kind": "parent"})
    result = run_stage("generate", params, tracker=tracker, parent_run_id=parent, progress=False)
    child = tracker.client.get_run(result["mlflow_run_id"])
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["babelrs.stage"] == "generate"
    assert len(child.data.tags["git.commit"]) in (40, len("unknown"))
    assert child.data.tags["babelrs.params_hash"]
    # only the params the stage reads
    assert "seed" in child.data.params and "soi_mini.sar.gsd_m" in child.data.params
    assert not any(k.startswith(("pretrain", "finetune", "importers")) for k in child.data.params)
    assert child.data.metrics["summary.sardet.train.images"] == 1.0
    assert "stage_seconds" in child.data.metrics


def test_failed_stage_marks_the_run_failed(tracker: Tracker, tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml", {"paths.manifest": str(tmp_path / "none.parquet")})
    with pytest.raises(FileNotFoundError):
        run_stage("validate", params, tracker=tracker, progress=False)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_redact_hides_secret_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    assert redact("key=s3cr3t-value-123 ok") == "key=*** ok"
