"""Corrupted or booby-trapped checkpoints are refused with a clear error, never unpickled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from babelrs_core.pretrain import checkpoint as pretrain_ckpt
from tests.faults.faultkit import run_cli, tiny_finetune_setup


class _Trap:
    """Unpickling this runs ``touch <marker>``: the proof that a loader executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _trapped_checkpoint(path: Path, marker: Path, **state: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "trap": _Trap(marker)}, path)
    return path


@pytest.mark.slow
def test_finetune_refuses_a_trapped_checkpoint_and_a_truncated_one(tmp_path: Path) -> None:
    params = tiny_finetune_setup(tmp_path)
    ckdir = tmp_path / "finetune" / "checkpoints"
    marker = tmp_path / "PWNED"
    trap = _trapped_checkpoint(ckdir / "iter_4.pth", marker, meta={}, state_dict={}, optimizer={})
    (ckdir / "last_checkpoint").write_text(str(trap))
    args = ("stage", "finetune", "--params", str(params), "--no-track", "--quiet")
    code, log = run_cli(*args, cwd=tmp_path)
    assert code == 1, log[-3000:]  # a BabelrsError: one line, exit 1 (not a traceback)
    assert f"error: {trap}: corrupted or unsafe checkpoint" in log and "Traceback" not in log
    assert not marker.exists(), "the checkpoint's pickle code ran"
    assert not (tmp_path / "finetune" / "detector.safetensors").exists()

    trap.write_bytes(b"PK\x03\x04" + os.urandom(64))  # a truncated zip: damaged, not malicious
    code, log = run_cli(*args, cwd=tmp_path)
    assert code == 1 and f"error: {trap}: corrupted or unsafe checkpoint" in log, log[-3000:]


def test_pretraining_refuses_a_trapped_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = _trapped_checkpoint(tmp_path / "step_0000003.pt", marker, format=1, step=3)
    with pytest.raises(pretrain_ckpt.CheckpointError, match=r"step_0000003\.pt: corrupted"):
        pretrain_ckpt.load_checkpoint(path)
    assert not marker.exists(), "the checkpoint's pickle code ran"
