"""Exclusive locks on what a stage writes: two runs (a scheduled retraining and a manual one, two
CLI calls, a flow and ``dvc repro``) never write the same output at once.

Each output ``<dir>/<name>`` is guarded by an advisory ``flock`` on ``<dir>/.<name>.lock`` (a hidden
sibling, ignored by git and DVC), held for the whole stage. The kernel drops the lock when its
process ends, however it ends (kill -9 included), so a crash never leaves a stale lock. A second
writer waits up to ``orchestration.output_lock_timeout_s`` and then fails with a message naming
the holder (pid, host, since when). Locks are taken in a fixed order, so two stages that share
outputs cannot deadlock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from babelrs_core.errors import BabelrsError


class OutputLockedError(BabelrsError):
    """Another run holds the lock of an output this stage writes."""

    transient = True  # the other run finishes; a retry later succeeds


def lock_file(output: Path) -> Path:
    """The lock file that guards ``output``: ``<dir>/.<name>.lock``."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


@contextmanager
def output_locks(
    outputs: Iterable[Path], timeout_s: float, who: str = "", poll_s: float = 0.2
) -> Iterator[None]:
    """Hold the locks of every path in ``outputs`` (waiting up to ``timeout_s`` for each)."""
    paths = sorted({Path(os.path.abspath(p)) for p in outputs})
    with ExitStack() as stack:
        for path in paths:
            stack.enter_context(_lock_one(path, timeout_s, who, poll_s))
        yield


@contextmanager
def _lock_one(output: Path, timeout_s: float, who: str, poll_s: float) -> Iterator[None]:
    target = lock_file(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(target, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutputLockedError(
                        f"{output}: another run is writing it ({_holder(fh)}); waited "
                        f"{timeout_s:.0f} s. Wait for that run, or raise "
                        "orchestration.output_lock_timeout_s"
                    ) from None
                time.sleep(poll_s)
        _write_holder(fh, who)
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_holder(fh: IO[str], who: str) -> None:
    fh.seek(0)
    fh.truncate(0)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": who,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    fh.write(json.dumps(info))
    fh.flush()


def _holder(fh: IO[str]) -> str:
    fh.seek(0)
    try:
        info = json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    if not info:
        return "holder unknown"
    what = f"{info.get('what')}, " if info.get("what") else ""
    return f"{what}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
