"""A tracked tiny pretraining run: its step metrics stream to MLflow every ``pretrain.log_every``
steps (equal to ``metrics.jsonl``), and it writes the config dump and the loss-curve PNG that the
stage run logs as artifacts."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from babelrs_core.pipeline import stage
from babelrs_core.pipeline.runner import execute_stage
from babelrs_core.stages import CONFIG_DUMP, LOSS_CURVES
from babelrs_core.tracking import Tracker
from tests.images import assert_png
from tests.pretrain.fakes import make_fake_dataset
from tests.pretrain.test_train import tiny_params

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

STEPS, EVERY = 12, 4


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return Tracker("test", uri, flush_every=7, artifact_location=(tmp_path / "art").as_uri())


def test_tracked_pretraining_streams_step_metrics_and_writes_artifacts(
    tracker: Tracker, tmp_path: Path
) -> None:
    manifest = make_fake_dataset(tmp_path / "data")
    base = tiny_params(tmp_path / "data" / "raw", steps=STEPS, log_every=EVERY, warmup_steps=2,
                       checkpoint_every=STEPS, eval_max_per_task=2)  # fmt: skip
    paths = {"raw": str(tmp_path / "data" / "raw"), "manifest": str(manifest),
             "pretrain_out": str(tmp_path / "pretrain")}  # fmt: skip
    params = base.model_copy(update={"paths": base.paths.model_copy(update=paths)})
    params = type(params).model_validate(params.model_dump())  # re-validated
    result = execute_stage(stage("pretrain"), params, tracker=tracker, progress=False)
    run_id = result["mlflow_run_id"]
    out = tmp_path / "pretrain"
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # the JSON log: every step
    by_step = {r["step"]: r for r in log}
    logged = list(range(EVERY, STEPS + 1, EVERY))
    for key in ("loss", "lr", "alpha", "grad_norm", "samples_per_s", "nonfinite_steps"):
        history = sorted(tracker.client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == logged, key  # one point per log_every steps
        for m in history:
            assert math.isfinite(m.value)
            assert m.value == pytest.approx(by_step[m.step][key], rel=1e-9, abs=1e-12), key
    alphas = [m.value for m in tracker.client.get_metric_history(run_id, "alpha")]
    assert alphas == sorted(alphas) and alphas[0] < 1.0  # LVSA annealing is visible
    modality_losses = {k for k in tracker.client.get_run(run_id).data.metrics if
                       k.startswith("loss_")}  # fmt: skip
    assert modality_losses and modality_losses <= {"loss_sar", "loss_rgb", "loss_ir"}

    # the artifacts the stage writes: config dump (resolved params subset) and the curves
    config = yaml.safe_load((out / CONFIG_DUMP).read_text())
    assert config["pretrain"]["steps"] == STEPS and config["seed"] == params.seed
    assert "finetune" not in config
    assert_png(out / LOSS_CURVES, min_size=(300, 300), min_colours=20)
    tracker.log_artifacts(run_id, [out / "metrics.jsonl", out / CONFIG_DUMP, out / LOSS_CURVES],
                          artifact_dir="pretrain")  # fmt: skip
    names = {a.path for a in tracker.client.list_artifacts(run_id, "pretrain")}
    assert names >= {f"pretrain/{n}" for n in ("metrics.jsonl", CONFIG_DUMP, LOSS_CURVES)}
