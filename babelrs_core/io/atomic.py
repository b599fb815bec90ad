"""Write files so that a crash, a full disk or a bad input never leaves half a file behind.

Every writer in babelrs goes through :func:`atomic_path` / :func:`atomic_dir`: data is written to a
temporary sibling, flushed, and renamed over the target only once complete (``os.replace`` is atomic
on POSIX within one file system). On any exception the temporary is removed and the old target, if
any, is untouched. A temporary left by a killed process (``.<name>.<random>.tmp``) is never read;
:func:`sweep_temporaries` removes such leftovers when a stage starts over its own folder.

Fault-suite hook (inert unless the variable is set): with ``BABELRS_FAULT_STOP_WRITE=<glob>``, a
write to a target whose file name matches the glob stops half-way: the temporary is cut to half
its size and the process stops itself (``SIGSTOP``), so a test can ``kill -9`` it at the moment a
checkpoint is being written (``tests/faults/test_kill_during_checkpoint_write.py``).
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from babelrs_core.errors import BabelrsError
from babelrs_core.settings_env import read

#: errors that mean "the disk (or the file size limit) is full", reported as :class:`DiskFullError`
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
#: tests only: a glob of target file names whose write stops half-way (see the module docstring)
FAULT_STOP_ENV = "BABELRS_FAULT_STOP_WRITE"


class DiskFullError(BabelrsError, OSError):
    """A write failed for lack of space; the target was left as it was."""


@contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fault_stop(tmp, target)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS and not isinstance(err, DiskFullError):
            raise DiskFullError(
                err.errno,
                f"{target}: not written, no space left ({err.strerror}); the previous "
                "file, if any, is unchanged",
            ) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _fault_stop(tmp: Path, target: Path) -> None:
    """The fault-suite hook: half the bytes on disk, then stop (a kill -9 lands mid-write)."""
    pattern = read(FAULT_STOP_ENV)
    if pattern and fnmatch.fnmatch(target.name, pattern):
        os.truncate(tmp, tmp.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGSTOP)


def sweep_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of interrupted atomic writes directly in ``folder`` (files and
    folders named ``.<name>.<random>.tmp``); return what was removed. Call it only on a folder
    that no other process is writing (a stage's own outputs, under its output lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone


@contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; swap it in for ``target`` on success.

    An existing ``target`` is replaced only after the new content is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    try:
        yield tmp
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``target`` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")
