"""A real full file system: the shard stage writes into a small tmpfs the test mounts (as root)
and filled up first, so a write really fails with ENOSPC part-way through the shards.

Asserted: the stage exits 1 with the project's one-line ``DiskFullError`` message naming the shard
folder, no traceback; every file at a final name is complete (each shard's sha256 starts with the
hash in its name, so a half-written shard cannot hide), no temporary file is left, no index is
written; after space is freed the rerun completes, keeps the shards already there and writes an
index whose every image checks out."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from babelrs_core.data.shards import INDEX_NAME, read_index, verify_shards
from tests.data import fake_data
from tests.faults.faultkit import run_cli, temp_leftovers

SIZE = 1 << 20  # the file system: 1 MiB
FREE = 48 << 10  # left free by the filler: two or three one-image shards (~20 KiB each)


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 1 MiB tmpfs mounted under ``tmp_path`` (unmounted afterwards). Fails, never skips, when
    mounting is not allowed: the test is about a real full file system."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(mnt)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        pytest.fail("cannot mount a small tmpfs: no `mount` command on this machine")
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN; uid {os.getuid()}): "
            f"{' '.join(cmd)} -> {done.returncode}: {done.stderr.strip()}"
        )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30, check=False)


def _fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on the file system at ``mnt``."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_shards_on_a_full_file_system(small_fs: Path, tmp_path: Path) -> None:
    _, manifest = fake_data.make_dataset(tmp_path / "data")
    n_images = 9
    shard_dir = small_fs / "shards"
    params = fake_data.params().model_dump(mode="json")
    params["paths"]["manifest"] = str(manifest)
    params["shards"].update(dir=str(shard_dir), index=str(shard_dir / INDEX_NAME), target_mb=1e-6)
    params_file = tmp_path / "params.yaml"  # a tiny target: one shard per image
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    filler = _fill(small_fs, FREE)

    args = ("data", "shard", "--params", str(params_file), "--quiet")
    code, log = run_cli(*args, cwd=tmp_path, timeout=300)
    assert code == 1, log
    assert f"error: {shard_dir}: shard " in log and "not written, no space left" in log, log
    assert "No space left on device" in log and "Traceback" not in log, log
    first = sorted(shard_dir.glob("*.tar"))
    assert 1 <= len(first) < n_images, [p.name for p in first]  # it did fill up part-way
    for tar in first:  # only complete shards at final names: content matches the name's hash
        digest = hashlib.sha256(tar.read_bytes()).hexdigest()
        assert tar.stem.rsplit("-", 1)[1] == digest[:16], tar.name
    assert not (shard_dir / INDEX_NAME).exists()
    assert temp_leftovers(small_fs) == [] and not list(shard_dir.glob(".*"))

    filler.unlink()  # space is freed
    code, log = run_cli(*args, cwd=tmp_path, timeout=300)
    assert code == 0, log
    index = read_index(shard_dir / INDEX_NAME)
    assert len(index) == n_images and index["shard"].nunique() == n_images
    assert {p.name for p in first} <= {p.name for p in shard_dir.glob("*.tar")}
    assert f'"written": {n_images - len(first)}' in log  # the shards already there were kept
    assert verify_shards(shard_dir) == []
    assert temp_leftovers(small_fs) == []
