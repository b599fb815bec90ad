"""The one stage runner: every entry point reaches a stage through ``execute_stage`` and records
the same lineage; the torchrun worker entry point; pipeline runners as plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from babelrs_core.config import ConfigError, load_params
from babelrs_core.pipeline import stage
from babelrs_core.pipeline.runner import execute_stage
from babelrs_core.pipeline.runners import get_runner, run_local, runner_names
from babelrs_core.settings_env import OFFLINE_ENV
from tests.pipeline.lineage import ROOT, assert_stage_lineage

TINY = {f"soi_mini.{d}.splits": {"train": 1} for d in ("sardet", "dota", "dronevehicle")}


def _tiny_params_file(tmp_path: Path) -> Path:
    params = load_params(ROOT / "params.yaml", {
        **TINY,
        "paths.raw": str(tmp_path / "raw"),
        "paths.manifest": str(tmp_path / "manifest.parquet"),
        "tracking.store": str(tmp_path / "mlflow"),
        "tracking.experiment": "one-runner",
    })  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BABELRS_"))}
    return env | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **OFFLINE_ENV}


def _runs(store: Path, stage_name: str) -> list:
    from babelrs_core.tracking import default_tracking_uri

    client = mlflow.MlflowClient(default_tracking_uri(store))
    exp = client.get_experiment_by_name("one-runner")
    found = client.search_runs([exp.experiment_id], f"tags.`babelrs.stage` = '{stage_name}'")
    return sorted(found, key=lambda r: r.info.start_time)


def test_cli_and_local_runner_record_the_same_lineage(tmp_path: Path) -> None:
    params_file = _tiny_params_file(tmp_path)
    params = load_params(params_file)
    execute_stage(stage("generate"), params, progress=False)  # untracked: data for `import`
    cli = [sys.executable, "-m", "babelrs_core.cli", "stage", "import", "-p", str(params_file)]
    done = subprocess.run([*cli, "--quiet"], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["mlflow_run_id"]
    results = run_local(str(params_file), stages=["import"])
    (cli_run, local_run) = _runs(tmp_path / "mlflow", "import")
    assert local_run.info.run_id == results["import"]["mlflow_run_id"]
    same_cli = assert_stage_lineage(cli_run, stage("import"), params, "cli")
    same_local = assert_stage_lineage(local_run, stage("import"), params, "local")
    assert same_cli == same_local
    parent = local_run.data.tags["mlflow.parentRunId"]
    assert parent == results["mlflow_parent_run_id"]


def test_worker_runs_a_stage_and_writes_its_result(tmp_path: Path) -> None:
    """What torchrun starts in each process, run here as one process."""
    params_file = _tiny_params_file(tmp_path)
    result_file = tmp_path / "result.json"
    args = ["--stage", "generate", "--params", str(params_file), "--result-json", str(result_file)]
    done = subprocess.run(
        [sys.executable, "-m", "babelrs_core.pipeline.worker", *args, "--no-track"],
        cwd=ROOT, env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert {d: split["train"]["images"] for d, split in result.items()} == {
        "sardet": 1, "dota": 1, "dronevehicle": 1
    }  # fmt: skip
    assert not (tmp_path / "mlflow").exists()  # --no-track


def test_runners_are_plugins_and_an_unknown_one_is_a_clear_error() -> None:
    from flows.retrain import run_pipeline

    assert runner_names()[:1] == ["local"] and "prefect" in runner_names()
    assert get_runner("prefect") is run_pipeline
    assert get_runner("local") is run_local
    with pytest.raises(ConfigError, match=r"no pipeline runner 'airflow'; installed: local, "):
        get_runner("airflow")


def test_the_core_never_imports_the_flows_package() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "babelrs_core").rglob("*.py")
        if any(
            line.strip().startswith(("import flows", "from flows"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
