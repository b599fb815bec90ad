"""A full disk during fine-tuning: a clear error, no half-written checkpoint or artifact, and a
rerun with space completes. The full disk is simulated with a file-size limit (RLIMIT_FSIZE) on the
fine-tuning process, which makes every write past the limit fail with EFBIG like ENOSPC would."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from tests.faults.faultkit import run_cli, temp_leftovers, tiny_finetune_setup

pytestmark = pytest.mark.slow

LIMIT = 4 << 20  # 4 MiB: logs and metrics fit, the first training checkpoint (~40 MiB) does not


def _small_disk() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_full_disk_leaves_nothing_half_written_and_a_rerun_completes(tmp_path: Path) -> None:
    params = tiny_finetune_setup(tmp_path, **{"finetune.iters": 8})
    out = tmp_path / "finetune"
    args = ("stage", "finetune", "--params", str(params), "--no-track", "--quiet")
    code, log = run_cli(*args, cwd=tmp_path, preexec_fn=_small_disk)
    assert code == 1, log
    assert f"{out / 'checkpoints' / 'iter_4.pth'}: not written, no space left" in log
    assert "Traceback" not in log
    assert not (out / "checkpoints" / "iter_4.pth").exists()
    assert not (out / "checkpoints" / "last_checkpoint").exists()
    assert not (out / "detector.safetensors").exists() and not (out / "detector.json").exists()
    assert temp_leftovers(tmp_path) == []
    assert all(p.stat().st_size <= LIMIT for p in out.rglob("*") if p.is_file())

    code, log = run_cli(*args, cwd=tmp_path)
    assert code == 0, log
    train = json.loads((out / "train.json").read_text())
    assert not train["resumed_from"] and train["iters_this_run"] == 8
    assert (out / "checkpoints" / "iter_8.pth").exists() and (out / "detector.json").exists()
    assert temp_leftovers(tmp_path) == []
