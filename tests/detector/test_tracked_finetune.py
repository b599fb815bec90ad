"""A tracked tiny fine-tuning run: step metrics every ``finetune.log_every`` iterations, and the
training artifacts the stage writes (metrics.jsonl, params subset, mmengine config, loss curves)
logged to its MLflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import yaml

from babelrs_core.detector.train import MMENGINE_CONFIG
from babelrs_core.pipeline import stage
from babelrs_core.pipeline.runner import execute_stage
from babelrs_core.stages import CONFIG_DUMP, LOSS_CURVES
from babelrs_core.tracking import Tracker
from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params
from tests.images import assert_png

torch.set_num_threads(1)

ITERS, EVERY = 4, 2
#: the artifacts to list in the finetune spec's ``extra["artifacts"]`` (babelrs_core/pipeline.py)
ARTIFACTS = ("metrics.jsonl", "train.json", CONFIG_DUMP, MMENGINE_CONFIG, LOSS_CURVES)


def test_tracked_finetune_streams_metrics_and_writes_artifacts(tmp_path: Path) -> None:
    make_fake_manifest(tmp_path)
    make_fake_encoder(tmp_path / "pretrain")
    params = tiny_params(tmp_path, **{"finetune.iters": ITERS, "finetune.log_every": EVERY})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker("test", uri, flush_every=20, artifact_location=(tmp_path / "art").as_uri())
    run_id = execute_stage(stage("finetune"), params, tracker=tracker, progress=False)[
        "mlflow_run_id"
    ]
    out = Path(params.paths.finetune_out)

    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    loss = sorted(tracker.client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in loss] == [r["iter"] for r in log] == list(range(EVERY, ITERS + 1, 2))
    assert [m.value for m in loss] == [r["loss"] for r in log]
    assert all(math.isfinite(m.value) for m in loss)

    config = yaml.safe_load((out / CONFIG_DUMP).read_text())
    assert config["finetune"]["iters"] == ITERS and "pretrain" not in config
    mm = (out / MMENGINE_CONFIG).read_text()
    assert "train_cfg = " in mm and f"'max_iters': {ITERS}" in mm
    assert_png(out / LOSS_CURVES, min_size=(300, 300), min_colours=20)
    tracker.log_artifacts(run_id, [out / a for a in ARTIFACTS], artifact_dir="finetune")
    names = {a.path for a in tracker.client.list_artifacts(run_id, "finetune")}
    assert names >= {f"finetune/{a}" for a in ARTIFACTS}
