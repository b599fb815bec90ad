"""kill -9 while a training checkpoint is being written (fine-tuning and pretraining).

The hook ``BABELRS_FAULT_STOP_WRITE`` (babelrs_core/io/atomic.py) stops the training process with
half of the checkpoint's bytes on disk; the test then kills it with SIGKILL. No truncated file ever
sits at a checkpoint's name, the previous checkpoint loads (``weights_only``), and the rerun resumes
from that checkpoint's iteration (not from 0), ends at the last one and sweeps the half-written
temporary away."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from babelrs_core.detector.checkpoint import (
    latest_training_checkpoint,
    safe_load_training_checkpoint,
)
from babelrs_core.io.atomic import FAULT_STOP_ENV
from babelrs_core.pretrain import checkpoint as pretrain_ckpt
from tests.faults.faultkit import (
    REPO,
    cli,
    cli_env,
    run_cli,
    temp_leftovers,
    tiny_finetune_setup,
    wait_stopped,
)


def _kill_mid_write(args: tuple[str, ...], cwd: Path, target: str) -> None:
    proc = cli(*args, cwd=cwd, env=cli_env(**{FAULT_STOP_ENV: target}))
    wait_stopped(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _half_written(folder: Path, name: str) -> list[Path]:
    tmps = [p for p in temp_leftovers(folder) if p.name.startswith(f".{name}.")]
    assert len(tmps) == 1 and tmps[0].stat().st_size > 0, tmps
    return tmps


@pytest.mark.slow
def test_finetune_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(
    tmp_path: Path,
) -> None:
    over = {"finetune.iters": 6, "finetune.checkpoint_every": 2, "finetune.keep_checkpoints": 3}
    params = tiny_finetune_setup(tmp_path, **over)
    out = tmp_path / "finetune"
    ckdir = out / "checkpoints"
    args = ("stage", "finetune", "--params", str(params), "--no-track", "--quiet")
    _kill_mid_write(args, tmp_path, "iter_4.pth")

    assert sorted(p.name for p in ckdir.glob("*.pth")) == ["iter_2.pth"]  # nothing at iter_4.pth
    _half_written(ckdir, "iter_4.pth")
    assert latest_training_checkpoint(ckdir).name == "iter_2.pth"
    assert safe_load_training_checkpoint(ckdir / "iter_2.pth")["meta"]["iter"] == 2

    code, log = run_cli(*args, cwd=tmp_path)
    assert code == 0, log[-3000:]
    train = json.loads((out / "train.json").read_text())
    assert (train["resumed_from"], train["iters_this_run"]) == (2, 4)
    iters = [json.loads(x)["iter"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == [2, 4, 6]  # no gap, no duplicate across the kill
    assert sorted(p.name for p in ckdir.glob("*.pth")) == ["iter_2.pth", "iter_4.pth", "iter_6.pth"]
    for n in (2, 4, 6):  # every file at a checkpoint's name is whole
        assert safe_load_training_checkpoint(ckdir / f"iter_{n}.pth")["meta"]["iter"] == n
    assert latest_training_checkpoint(ckdir).name == "iter_6.pth"
    assert temp_leftovers(out) == []


def test_pretraining_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(
    tmp_path: Path,
) -> None:
    from babelrs_core.config import load_params
    from tests.pretrain.fakes import make_fake_dataset
    from tests.pretrain.test_train import tiny_params

    manifest = make_fake_dataset(tmp_path)
    out = tmp_path / "pretrain"
    tiny = tiny_params(tmp_path / "raw", steps=6, checkpoint_every=2, eval_max_per_task=1,
                       threads=1).pretrain.model_dump(mode="json")  # fmt: skip
    over = {"seed": 3, "paths.raw": str(tmp_path / "raw"), "paths.manifest": str(manifest),
            "paths.pretrain_out": str(out), "pretrain": tiny}  # fmt: skip
    params = load_params(REPO / "params.yaml", over)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    ckdir = out / "checkpoints"
    args = ("stage", "pretrain", "--params", str(params_file), "--no-track", "--quiet")
    _kill_mid_write(args, tmp_path, "step_0000004.pt")

    assert [p.name for p in pretrain_ckpt.list_checkpoints(ckdir)] == ["step_0000002.pt"]
    _half_written(ckdir, "step_0000004.pt")
    assert pretrain_ckpt.load_checkpoint(ckdir / "step_0000002.pt")["step"] == 2

    code, log = run_cli(*args, cwd=tmp_path)
    assert code == 0, log[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["timing"]["resumed_from"], metrics["timing"]["steps_this_run"]) == (2, 4)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in pretrain_ckpt.list_checkpoints(ckdir)] == ["step_0000006.pt"]
    assert pretrain_ckpt.load_checkpoint(ckdir / "step_0000006.pt")["step"] == 6
    assert (out / "encoder.safetensors").is_file()
    assert temp_leftovers(out) == []
