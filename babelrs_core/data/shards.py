"""Content-addressed tar shards of the manifest's images, and a reader that seeks single images.

Why: DVC stores and moves one object per file. A real dataset has hundreds of thousands of image
files; packed into shards of ``shards.target_mb`` each, DVC moves hundreds of files instead.

Layout (``shards.dir``)::

    data/shards/soi_mini/
      dota-train-3f0c9a1b2d4e5f60.tar      <dataset>-<split>-<first 16 hex of the tar's sha256>
      ...
      index.parquet                         image_id -> shard, member, offset, size, sha256

A shard is a plain POSIX tar (PAX format) of the original image files, byte for byte, named
``<image_id><suffix>`` inside (``dota/train/P0000.png``), written deterministically (sorted
members, mtime 0, uid/gid 0, mode 0644): the same images always give the same bytes, hence the
same name. ``tar tf`` / ``tar xf`` work on it.

Which image goes to which shard (stable under edits and insertions)
    Images are grouped by ``(dataset, split)`` and sorted by ``image_id``. Within a group, a new
    shard starts at image *i* iff ``h(image_id_i) < 2**64 / K`` where ``h`` is a 64-bit BLAKE2b
    hash of the id and ``K = target_bytes / median image size`` of the group: boundaries are a
    property of the ids themselves (content-defined chunking over the sorted id list), so shards
    average K images (about ``target_mb``).

    * Changing one image's bytes changes exactly one shard (its name and content) -- and the
      index, which DVC also re-pushes (it is small).
    * Inserting or deleting an image changes only the shard it falls into (two if the new id is
      itself a boundary: that shard splits in two). Chunking the sorted list by count or by size
      instead would shift every later boundary and re-push everything after the insertion point;
      hash buckets ``h(id) % n`` would reshuffle every shard whenever ``n`` grows with the data.
    * ``K`` moves only when the group's median image size moves; thresholds are nested
      (``h < 2**64/K`` for a larger ``K`` implies it for a smaller one), so a small change of
      ``K`` adds or removes only a few boundaries.
    * Shard sizes vary: the number of images per shard is geometric with mean ``K`` (about 5 %
      of shards exceed 3 ``K``); a group smaller than ``K`` images is one shard.

Reading: :class:`ShardReader` maps ``image_id`` to ``(shard, offset, size)`` and reads the bytes
with one ``pread`` (random access, thread-safe, no unpacking); :meth:`ShardReader.stream` walks
shards sequentially (``tarfile`` stream mode) for epoch-style reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from babelrs_core.data.manifest import images, read_manifest
from babelrs_core.errors import BadInputError
from babelrs_core.io.atomic import DISK_FULL_ERRNOS, DiskFullError, atomic_path
from babelrs_core.io.images import crop_window, decode_image

INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("shard", pa.string()),  # file name inside the shard folder
        ("member", pa.string()),  # name inside the tar
        ("offset", pa.int64()),  # byte offset of the member's data inside the shard
        ("size", pa.int64()),  # bytes
        ("sha256", pa.string()),  # of the image bytes
    ]
)
INDEX_NAME = "index.parquet"
_HASH_SPACE = 2**64


class ShardError(BadInputError):
    """A shard or the index is missing, corrupt or disagrees with the other."""


def id_hash(image_id: str) -> int:
    """Stable 64-bit hash of an image id (BLAKE2b, independent of Python's hash seed)."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "big")


@dataclass
class PlannedShard:
    """Images (sorted) that go into one shard."""

    dataset: str
    split: str
    image_ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def plan_shards(table: pd.DataFrame, target_bytes: float) -> list[PlannedShard]:
    """Assign images to shards (see the module docstring).

    ``table`` has one row per image with ``image_id``, ``dataset``, ``split``, ``path`` and
    ``bytes``. Returns shards in ``image_id`` order.
    """
    table = table.sort_values("image_id", kind="stable")
    out: list[PlannedShard] = []
    for (dataset, split), group in table.groupby(["dataset", "split"], sort=True):
        median = float(np.median(group["bytes"])) if len(group) else 1.0
        k = max(1.0, float(target_bytes) / max(median, 1.0))
        threshold = int(_HASH_SPACE / k)
        current: PlannedShard | None = None
        for image_id, path, size in group[["image_id", "path", "bytes"]].itertuples(index=False):
            if current is None or id_hash(image_id) < threshold:
                current = PlannedShard(str(dataset), str(split))
                out.append(current)
            current.image_ids.append(image_id)
            current.paths.append(path)
            current.sizes.append(int(size))
    out.sort(key=lambda s: s.image_ids[0])
    return out


class _HashingWriter(io.RawIOBase):
    """A write-only file object that hashes what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.raw.write(data)
        self.sha.update(data)
        self.n += len(data)
        return len(data)

    def tell(self) -> int:
        return self.n


def _member_name(image_id: str, path: str) -> str:
    return image_id + Path(path).suffix.lower()


def write_tar(shard: PlannedShard, target_dir: Path) -> tuple[str, list[dict[str, Any]], bool]:
    """Write one shard deterministically; returns (file name, index rows, newly written).

    The shard is written to a temporary file and renamed only once complete; a full disk raises
    :class:`~babelrs_core.io.atomic.DiskFullError` naming the shard folder (nothing left behind).
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _write_tar(shard, target_dir)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS and not isinstance(err, DiskFullError):
            raise DiskFullError(
                err.errno,
                f"{target_dir}: shard {shard.dataset}-{shard.split} from {shard.image_ids[0]} "
                f"not written, no space left ({err.strerror}); the shards and index already "
                "there are unchanged",
            ) from err
        raise


def _write_tar(shard: PlannedShard, target_dir: Path) -> tuple[str, list[dict[str, Any]], bool]:
    fd, tmp_name = tempfile.mkstemp(prefix=".shard.", suffix=".tar.tmp", dir=target_dir)
    tmp = Path(tmp_name)
    digests = []
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for image_id, path in zip(shard.image_ids, shard.paths, strict=True):
                    data = Path(path).read_bytes()
                    digests.append(hashlib.sha256(data).hexdigest())
                    info = tarfile.TarInfo(_member_name(image_id, path))
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        name = f"{shard.dataset}-{shard.split}-{writer.sha.hexdigest()[:16]}.tar"
        final = target_dir / name
        written = not (final.exists() and final.stat().st_size == tmp.stat().st_size)
        if written:
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            os.replace(tmp, final)
        with tarfile.open(final, "r:") as tar:  # headers only: where each member's data starts
            members = {m.name: m for m in tar.getmembers()}
        rows = []
        for image_id, path, digest in zip(shard.image_ids, shard.paths, digests, strict=True):
            m = members[_member_name(image_id, path)]
            rows.append(
                {
                    "image_id": image_id,
                    "shard": name,
                    "member": m.name,
                    "offset": m.offset_data,
                    "size": m.size,
                    "sha256": digest,
                }
            )
        return name, rows, written
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class ShardReport:
    """Outcome of :func:`write_shards`."""

    shard_dir: Path
    index: Path
    shards: int
    images: int
    bytes: int
    written: int  # shards that were new (the others already existed byte for byte)
    removed: int  # stale shards deleted

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_dir": str(self.shard_dir),
            "index": str(self.index),
            "shards": self.shards,
            "images": self.images,
            "bytes": self.bytes,
            "written": self.written,
            "removed": self.removed,
        }


def write_shards(
    manifest: pd.DataFrame | str | os.PathLike[str],
    shard_dir: str | os.PathLike[str],
    target_mb: float = 64.0,
    index_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ShardReport:
    """Pack the images of ``manifest`` (a frame with absolute paths, or a manifest file) into
    ``shard_dir`` and write the index (default ``shard_dir/index.parquet``).

    Shards that already exist with the same content are kept as they are; shards no longer in
    the index are deleted after the new index is in place (a crash leaves the old index valid).
    """
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    shard_dir = Path(shard_dir)
    index_path = Path(index_path) if index_path is not None else shard_dir / INDEX_NAME
    table = images(frame)[["image_id", "dataset", "split", "path"]].copy()
    missing = [p for p in table["path"] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) of the manifest not found, e.g. {missing[0]} "
            "(run `babelrs data validate` first)"
        )
    table["bytes"] = [Path(p).stat().st_size for p in table["path"]]
    plan = plan_shards(table, target_mb * 1024 * 1024)
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    written = 0
    for shard in tqdm(plan, desc="write shards", unit=" shards", disable=not progress):
        name, shard_rows, new = write_tar(shard, shard_dir)
        names.append(name)
        rows += shard_rows
        written += int(new)
    index = pd.DataFrame(rows, columns=INDEX_SCHEMA.names).sort_values("image_id")
    with atomic_path(index_path, suffix=".parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(index, INDEX_SCHEMA, preserve_index=False), tmp)
    keep = set(names)
    removed = 0
    for p in shard_dir.glob("*.tar"):
        if p.name not in keep:
            p.unlink()
            removed += 1
    for p in shard_dir.glob(".shard.*.tmp"):
        p.unlink(missing_ok=True)
    total = sum(int((shard_dir / n).stat().st_size) for n in keep)
    return ShardReport(shard_dir, index_path, len(keep), len(index), total, written, removed)


def read_index(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The shard index; a clear error when it is missing or not an index."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard index not found (run `babelrs data shard`)")
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:
        raise ShardError(f"{path}: not a readable shard index ({exc})") from exc
    missing = set(INDEX_SCHEMA.names) - set(frame.columns)
    if missing:
        raise ShardError(f"{path}: shard index lacks columns {sorted(missing)}")
    return frame


def verify_shards(
    shard_dir: str | os.PathLike[str],
    index: str | os.PathLike[str] | None = None,
    sizes_only: bool = False,
) -> list[str]:
    """Problems found: shards the index names that are missing, shards shorter than the index
    needs (truncated), shards whose sha256 does not start with their name's hash, images whose
    bytes do not match the index's sha256. ``sizes_only``: only the cheap checks (missing,
    truncated), no hashing."""
    shard_dir = Path(shard_dir)
    frame = read_index(Path(index) if index else shard_dir / INDEX_NAME)
    problems = []
    for name, rows in frame.groupby("shard"):
        path = shard_dir / name
        if not path.is_file():
            problems.append(f"{path}: shard named by the index is missing")
            continue
        # a tar ends with two 512-byte zero blocks after the last member's padded data
        last = int((rows["offset"] + rows["size"]).max())
        needed = -(-last // 512) * 512 + 1024
        have = path.stat().st_size
        if have < needed:
            problems.append(
                f"{path}: truncated: {have} bytes, but the index needs at least {needed} "
                "(re-run the shard stage, or dvc pull / checkout the shard again)"
            )
            continue
        if sizes_only:
            continue
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        if not name.rsplit("-", 1)[-1].startswith(sha.hexdigest()[:16]):
            problems.append(f"{path}: content hash {sha.hexdigest()[:16]} does not match its name")
        with open(path, "rb") as fh:
            for image_id, offset, size, digest in rows[
                ["image_id", "offset", "size", "sha256"]
            ].itertuples(index=False):
                fh.seek(int(offset))
                if hashlib.sha256(fh.read(int(size))).hexdigest() != digest:
                    problems.append(f"{path}: bytes of {image_id} do not match the index")
    return problems


class ShardReader:
    """Random access to images in shards by ``image_id`` (and sequential streaming).

    ``ShardReader("data/shards/soi_mini")`` (or the index file). Thread-safe reads (``pread``);
    at most ``max_open`` shard files are kept open.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        verify: bool = False,
        max_open: int = 16,
    ) -> None:
        location = Path(location)
        index_path = location / INDEX_NAME if location.is_dir() else location
        self.shard_dir = index_path.parent
        self.index = read_index(index_path)
        self._by_id = {
            row[0]: row[1:]
            for row in self.index[["image_id", "shard", "offset", "size", "sha256"]].itertuples(
                index=False
            )
        }
        self.verify = verify
        self.max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._by_id

    def ids(self) -> list[str]:
        return list(self._by_id)

    def shards(self) -> list[str]:
        return sorted(self.index["shard"].unique())

    def _fd(self, shard: str) -> int:
        fd = self._fds.get(shard)
        if fd is not None:
            self._fds.move_to_end(shard)
            return fd
        path = self.shard_dir / shard
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ShardError(f"{path}: shard not found (dvc pull?)") from None
        self._fds[shard] = fd
        while len(self._fds) > self.max_open:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def read(self, image_id: str) -> bytes:
        """The image file's bytes, exactly as they were packed."""
        try:
            shard, offset, size, digest = self._by_id[image_id]
        except KeyError:
            raise KeyError(f"{image_id!r} is not in the shard index") from None
        data = os.pread(self._fd(shard), int(size), int(offset))
        if len(data) != size:
            raise ShardError(f"{self.shard_dir / shard}: truncated at {image_id!r}")
        if self.verify and hashlib.sha256(data).hexdigest() != digest:
            raise ShardError(f"{self.shard_dir / shard}: bytes of {image_id!r} do not match")
        return data

    def open(self, image_id: str) -> Image.Image:
        """The decoded PIL image."""
        im = Image.open(io.BytesIO(self.read(image_id)))
        im.load()
        return im

    def name(self, image_id: str) -> str:
        """``<shard path>[<image_id>]``: how errors name an image inside its shard."""
        shard = self._by_id[image_id][0] if image_id in self._by_id else "?"
        return f"{self.shard_dir / shard}[{image_id}]"

    def load(
        self,
        image_id: str,
        crop_x: int = 0,
        crop_y: int = 0,
        width: int | None = None,
        height: int | None = None,
    ) -> np.ndarray:
        """``(H, W, 3)`` uint8 cropped to the manifest's window, as ``io.images.load_image``."""
        name = self.name(image_id)
        arr = decode_image(self.read(image_id), name)
        return crop_window(arr, name, crop_x, crop_y, width, height)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. into DataLoader workers) without the open file descriptors."""
        return {**self.__dict__, "_fds": OrderedDict()}

    def stream(self, shards: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        """``(image_id, bytes)`` shard after shard, read sequentially (tar stream mode)."""
        by_member = dict(zip(self.index["member"], self.index["image_id"], strict=True))
        for shard in shards if shards is not None else self.shards():
            with tarfile.open(self.shard_dir / shard, mode="r|") as tar:
                for member in tar:
                    fh = tar.extractfile(member)
                    if fh is None or member.name not in by_member:
                        continue
                    yield by_member[member.name], fh.read()

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()
