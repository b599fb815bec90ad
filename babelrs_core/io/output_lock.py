"""Locks on what a stage writes and reads: two runs (a scheduled retraining and a manual one, two
CLI calls, a flow and ``dvc repro``) never write the same output at once, and no stage reads an
input while another run rewrites it.

Each path is guarded by an advisory ``flock`` on a lock file named after its absolute path, in one
folder per user under the system's temporary directory (``lock_file``; nothing is written beside
the data, so DVC and git see nothing), held for the whole stage: exclusive on its outputs, shared
on its inputs (many readers, or one writer). Runs on one machine exclude each other (``flock``
does not reach across machines: runs on several hosts sharing a file system need per-run
outputs). The kernel drops a lock when its process ends, however it ends (kill -9 included), so a
crash never leaves a stale lock. A stage that cannot get a lock waits up to
``orchestration.output_lock_timeout_s`` and then fails with a message naming the writer that holds
it (pid, host, since when). Every stage takes its locks in one global order (sorted paths), so two
stages cannot deadlock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from babelrs_core.errors import BabelrsError


class OutputLockedError(BabelrsError):
    """Another run holds the lock of an output this stage writes."""

    transient = True  # the other run finishes; a retry later succeeds


def lock_file(path: Path) -> Path:
    """The lock file that guards ``path``: ``<tmp>/babelrs-locks-<uid>/<name>-<hash>.lock``, the
    hash of the absolute path (the same file for every process of this user on this machine)."""
    absolute = os.path.abspath(path)
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / f"babelrs-locks-{os.getuid()}"
    return folder / f"{Path(absolute).name[:40]}-{digest}.lock"


@contextmanager
def output_locks(
    outputs: Iterable[Path],
    timeout_s: float,
    who: str = "",
    inputs: Iterable[Path] = (),
    poll_s: float = 0.2,
) -> Iterator[None]:
    """Hold an exclusive lock on every path in ``outputs`` and a shared one on every path in
    ``inputs`` that is not also an output (waiting up to ``timeout_s`` for each)."""
    writes = {Path(os.path.abspath(p)) for p in outputs}
    reads = {Path(os.path.abspath(p)) for p in inputs} - writes
    with ExitStack() as stack:
        for path in sorted(writes | reads):
            stack.enter_context(_lock_one(path, path in writes, timeout_s, who, poll_s))
        yield


@contextmanager
def _lock_one(
    path: Path, exclusive: bool, timeout_s: float, who: str, poll_s: float
) -> Iterator[None]:
    target = lock_file(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(target, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    use = "write" if exclusive else "read"
                    raise OutputLockedError(
                        f"{path}: another run holds it ({_holder(fh)}), so this stage cannot "
                        f"{use} it; waited {timeout_s:.0f} s. Wait for that run, or raise "
                        "orchestration.output_lock_timeout_s"
                    ) from None
                time.sleep(poll_s)
        if exclusive:
            _write_holder(fh, who)
        try:
            yield
        finally:
            if exclusive:
                fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_holder(fh: IO[str], who: str) -> None:
    fh.seek(0)
    fh.truncate(0)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "what": who,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fh.write(json.dumps(info))
    fh.flush()


def _holder(fh: IO[str]) -> str:
    fh.seek(0)
    try:
        info = json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    if not info:
        return "readers, or a writer that left no note"
    what = f"{info.get('what')}, " if info.get("what") else ""
    return f"{what}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
