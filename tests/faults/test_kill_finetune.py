"""kill -9 of the fine-tuning process mid-run; the rerun resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from babelrs_core.detector.checkpoint import latest_training_checkpoint
from tests.faults.faultkit import cli, run_cli, temp_leftovers, tiny_finetune_setup, wait_for

pytestmark = pytest.mark.slow


def test_kill_9_mid_run_then_rerun_resumes_and_finishes(tmp_path: Path) -> None:
    params = tiny_finetune_setup(tmp_path, **{"finetune.iters": 16})
    out = tmp_path / "finetune"
    args = ("stage", "finetune", "--params", str(params), "--no-track", "--quiet")
    proc = cli(*args, cwd=tmp_path)
    wait_for(out / "checkpoints" / "iter_8.pth", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "detector.safetensors").exists()  # it did not get to the end
    resume_from = latest_training_checkpoint(out / "checkpoints")
    assert resume_from is not None and resume_from.name in {"iter_4.pth", "iter_8.pth"}

    code, log = run_cli(*args, cwd=tmp_path)
    assert code == 0, log
    train = json.loads((out / "train.json").read_text())
    done = int(resume_from.stem.split("_")[1])
    assert train["resumed_from"] == done and train["iters_this_run"] == 16 - done
    iters = [json.loads(x)["iter"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == list(range(2, 17, 2))  # no gap, no duplicate across the kill
    assert (out / "detector.safetensors").exists() and (out / "detector.json").exists()
    assert temp_leftovers(out) == []
