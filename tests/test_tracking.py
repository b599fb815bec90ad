"""MLflow tracking against a real local store: batching, nesting, lineage, params, redaction."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from babelrs_core.config import flatten, load_params
from babelrs_core.pipeline import stage
from babelrs_core.pipeline.runner import execute_stage
from babelrs_core.tracking import (
    ERROR_TAG,
    MetricBuffer,
    Tracker,
    log_step,
    params_hash,
    redact,
)

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
    history = sorted(tracker.client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(100))  # the NaN at step 100 was dropped
    assert [m.value for m in history] == pytest.approx([1.0 / (s + 1) for s in range(100)])
    lr = tracker.client.get_metric_history(run_id, "lr")
    assert len(lr) == 100 and {m.value for m in lr} == {0.1}
    log_step(0, {"loss": 1.0})  # outside a sink: a no-op, not an error


def test_execute_stage_makes_a_child_run_with_params_subset_and_lineage(
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
    result = execute_stage(
        stage("generate"), params, tracker=tracker, parent_run_id=parent, progress=False
    )
    child = tracker.client.get_run(result["mlflow_run_id"])
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["babelrs.stage"] == "generate"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    assert child.data.tags["git.commit"] == (
        head.stdout.strip() if head.returncode == 0 else "unknown"
    )
    assert child.data.tags["git.dirty"] in ("true", "false")
    assert child.data.tags["babelrs.params_hash"] == params_hash(flatten(params))
    assert child.data.tags["babelrs.runner"] == "cli"
    # only the params the stage reads
    assert child.data.params["seed"] == str(params.seed)
    assert child.data.params["soi_mini.sar.gsd_m"] == str(params.soi_mini.sar.gsd_m)
    assert not any(k.startswith(("pretrain", "finetune", "importers")) for k in child.data.params)
    assert child.data.metrics["summary.sardet.train.images"] == 1.0
    assert 0 < child.data.metrics["stage_seconds"] < 600


def test_failed_stage_marks_the_run_failed_with_its_error(
    tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-in-a-path")
    missing = tmp_path / "s3cr3t-in-a-path" / "none.parquet"
    params = load_params(ROOT / "params.yaml", {"paths.manifest": str(missing)})
    with pytest.raises(FileNotFoundError) as raised:
        execute_stage(stage("validate"), params, tracker=tracker, progress=False)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["babelrs.stage"] == "validate" and runs[0].info.end_time is not None
    # the error is on the run, its secret redacted
    error = runs[0].data.tags[ERROR_TAG]
    assert error == f"FileNotFoundError: {raised.value}".replace("s3cr3t-in-a-path", "***")
    assert "none.parquet" in error and "s3cr3t" not in error


def test_redact_hides_secret_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    assert redact("key=s3cr3t-value-123 ok") == "key=*** ok"


def test_stages_reading_the_manifest_log_it_as_an_mlflow_dataset(
    tracker: Tracker, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from babelrs_core.io.hashing import path_hash
    from tests.detector.det_fakes import make_fake_manifest

    manifest = make_fake_manifest(tmp_path)
    over = {
        "paths.manifest": str(manifest),
        "paths.raw": str(tmp_path / "raw"),
        "validation.out_dir": str(tmp_path / "val"),
        "validation.data_docs": False,
    }
    params = load_params(ROOT / "params.yaml", over)
    from babelrs_core.data.validation.report import DataValidationError

    # the fake labels break a validation rule (fake label indices): the run fails, and the data
    # it judged is still recorded (logged when the run starts)
    with pytest.raises(DataValidationError, match="label_matches_class"):
        execute_stage(stage("validate"), params, tracker=tracker, progress=False)
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FAILED"
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == manifest.stem and inp.dataset.digest == path_hash(manifest)
    assert json.loads(inp.dataset.profile)["num_rows"] == pq.read_metadata(manifest).num_rows
    cols = {c["name"] for c in json.loads(inp.dataset.schema)["babelrs_columns"]}
    assert {"image_id", "dataset", "split"} <= cols
    assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "validation")]
    # a stage that does not read the manifest logs no dataset
    gen = load_params(
        ROOT / "params.yaml",
        {
            "paths.raw": str(tmp_path / "gen"),
            **{f"soi_mini.{d}.splits": {"train": 1} for d in ("sardet", "dota", "dronevehicle")},
        },
    )
    result = execute_stage(stage("generate"), gen, tracker=tracker, progress=False)
    assert not tracker.client.get_run(result["mlflow_run_id"]).inputs.dataset_inputs


def test_a_new_run_closes_the_runs_a_killed_process_left_running(tracker: Tracker) -> None:
    """A run whose owner process is dead (pid gone, or reused by a younger process) is marked
    KILLED when a run of the same name and params hash starts; live, foreign-host, other-params and
    untagged runs stay RUNNING."""
    import os
    import sys

    from babelrs_core.tracking import owner_tags

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = owner_tags()
    owners = {
        "dead": {**me, "babelrs.owner.pid": str(dead.pid)},
        "reused": {**me, "babelrs.owner.pid_start": "1"},  # this pid, started at another time
        "alive": me,
        "elsewhere": {**me, "babelrs.owner.host": "another-host", "babelrs.owner.pid": "1"},
        "untagged": {},
    }
    ids = {}
    for key, owner in owners.items():
        tags = {"babelrs.params_hash": "h1", "babelrs.stage": "finetune", **owner}
        ids[key] = tracker.client.create_run(
            tracker.experiment_id, run_name="finetune", tags=tags
        ).info.run_id
    other = {**owners["dead"], "babelrs.params_hash": "h2"}
    ids["other_params"] = tracker.client.create_run(
        tracker.experiment_id, run_name="finetune", tags=other
    ).info.run_id
    new = tracker.start("finetune", {"babelrs.params_hash": "h1"})
    status = {k: tracker.client.get_run(v).info.status for k, v in ids.items()}
    assert status == {
        "dead": "KILLED",
        "reused": "KILLED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "untagged": "RUNNING",
        "other_params": "RUNNING",
    }
    note = tracker.client.get_run(ids["dead"]).data.tags["babelrs.closed_as_orphan"]
    assert note.startswith(f"its process {me['babelrs.owner.host']}:{dead.pid} is gone")
    tags = tracker.client.get_run(new).data.tags
    assert tags["babelrs.owner.pid"] == str(os.getpid()) and tags["babelrs.owner.pid_start"]


def test_an_experiment_created_by_another_process_meanwhile_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launchers of a multi-node run start together: both miss the experiment, one creates
    it first; the other's create fails and it takes that one."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker("race", uri)
    real_get = mlflow.MlflowClient.get_experiment_by_name
    misses = iter([None])  # the second tracker's first look happens before the other's create

    def late_get(self, name):
        return None if next(misses, "seen") is None else real_get(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", late_get)
    assert Tracker("race", uri).experiment_id == first.experiment_id
