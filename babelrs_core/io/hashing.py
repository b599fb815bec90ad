"""Content hashes of files and folders: the one home for data digests.

:func:`path_hash` reads the bytes once per state of the files: the digest is remembered under the
folder's *stat signature* (relative names, sizes and modification times, as DVC's stat cache
does), so a Prefect cache key and the lineage tags of the same task, or the twelve stages of one
flow that read ``data/raw``, pay for one read, not one each. Python bytecode (``__pycache__``,
``*.pyc``) is not content: importing the code must not change it (``.dvcignore`` skips the same).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_CHUNK = 1 << 20
_MEMO: dict[tuple[str, int], str] = {}
_MEMO_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Full hex SHA-256 of one file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix != ".pyc" and "__pycache__" not in p.relative_to(path).parts
    )


def _name(path: Path, f: Path) -> str:
    return str(f.relative_to(path) if path.is_dir() else f.name)


def stat_signature(path: Path, files: list[Path] | None = None) -> int:
    """Hash of the names, sizes and mtimes of the files under ``path`` (no content read);
    ``files``: the list of :func:`_files`, when the caller has it already."""
    sig = []
    for f in _files(path) if files is None else files:
        st = f.stat()
        sig.append((_name(path, f), st.st_size, st.st_mtime_ns, st.st_ino))
    return hash(tuple(sig))


def path_hash(path: str | os.PathLike[str]) -> str:
    """Content hash of a file or folder (sorted relative names + bytes), 16 hex digits;
    remembered for as long as the files' stat signature stays the same."""
    path = Path(path)
    files = _files(path)  # one walk of the folder for the signature and the hash
    key = (str(path.resolve()), stat_signature(path, files))
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    h = hashlib.sha256()
    for f in files:
        h.update(_name(path, f).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    digest = h.hexdigest()[:16]
    with _MEMO_LOCK:
        _MEMO[key] = digest
    return digest
