"""Two runs never write one output at once: the second waits, or fails naming the first; a killed
holder leaves no stale lock. The holder is a real second process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from babelrs_core.config import load_params
from babelrs_core.io.output_lock import OutputLockedError, lock_file, output_locks
from babelrs_core.pipeline import stage
from babelrs_core.pipeline.runner import execute_stage

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from babelrs_core.io.output_lock import output_locks
path, seconds, mode = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
writes, reads = ([path], []) if mode == "write" else ([], [path])
with output_locks(writes, 5, who="stage finetune (the other run)", inputs=reads):
    print("held", flush=True)
    time.sleep(seconds)
"""


def _holder(output: Path, seconds: float, mode: str = "write") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(output), str(seconds), mode],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _tiny(tmp_path: Path, timeout_s: float):
    return load_params(ROOT / "params.yaml", {
        "paths.raw": str(tmp_path / "raw"),
        "orchestration.output_lock_timeout_s": timeout_s,
        **{f"soi_mini.{d}.splits": {"train": 1} for d in ("sardet", "dota", "dronevehicle")},
    })  # fmt: skip


def test_a_second_writer_fails_naming_the_first_and_a_kill_leaves_no_stale_lock(
    tmp_path: Path,
) -> None:
    params = _tiny(tmp_path, timeout_s=1.0)
    holder = _holder(params.paths.raw, 120)
    try:
        t0 = time.monotonic()
        with pytest.raises(OutputLockedError) as err:
            execute_stage(stage("generate"), params, progress=False)
        assert time.monotonic() - t0 >= 1.0  # it waited the configured time
        msg = str(err.value)
        assert msg.startswith(f"{params.paths.raw.resolve()}: another run holds it (stage finetune")
        assert f"stage finetune (the other run), pid {holder.pid} on " in msg
        assert "so this stage cannot write it" in msg
        assert "orchestration.output_lock_timeout_s" in msg
        assert not params.paths.raw.exists()  # nothing written by the refused run
        assert err.value.transient  # a flow retry may succeed once the other run is done
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    # the kernel dropped the dead holder's lock: the next run goes ahead at once
    result = execute_stage(stage("generate"), _tiny(tmp_path, timeout_s=0.0), progress=False)
    assert (params.paths.raw / "SARDet_100K").is_dir() and result
    lock = lock_file(params.paths.raw)  # outside the data: nothing beside raw/ but the dataset
    assert lock.is_file() and lock.parent != params.paths.raw.parent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    with output_locks([params.paths.raw], 0.0):  # free again after the stage
        pass


def test_a_second_writer_waits_for_the_first_to_finish(tmp_path: Path) -> None:
    out = tmp_path / "finetune"
    holder = _holder(out, 2.0)
    t0 = time.monotonic()
    with output_locks([out], 60.0):
        waited = time.monotonic() - t0
    holder.wait(timeout=30)
    assert holder.returncode == 0 and 1.0 <= waited < 30


def test_readers_share_an_input_and_keep_a_writer_out(tmp_path: Path) -> None:
    data = tmp_path / "manifest.parquet"
    reader = _holder(data, 120, mode="read")
    try:
        with output_locks([tmp_path / "eval"], 0.0, inputs=[data]):  # a second reader: at once
            pass
        with pytest.raises(OutputLockedError, match="so this stage cannot write it"):
            output_locks_entered([data], timeout_s=0.5)
    finally:
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait(timeout=30)
    output_locks_entered([data], timeout_s=0.0)  # the reader is gone: the writer goes ahead


def output_locks_entered(outputs: list[Path], timeout_s: float) -> None:
    with output_locks(outputs, timeout_s, who="writer"):
        pass
