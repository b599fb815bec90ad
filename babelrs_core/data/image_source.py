"""The one way stages read pixels: a manifest row resolved to its decoded, cropped image.

``images.source`` in params picks where the bytes come from:

* ``files``: the loose image files the manifest's ``path`` column names (``data/raw/...``);
* ``shards``: the content-addressed tar shards through their index (``shards.index``), one
  ``pread`` per image, no unpacking -- a training machine then needs only the manifest and the
  shards (``dvc pull`` of ``data/manifest`` and ``data/shards``).

Decoded windows are kept in a bounded LRU cache (``images.cache_mb`` in all, split evenly over
the fine-tuning DataLoader's ``images.loader_workers`` processes; 0 = no cache), so memory is set
by params, not by the size of the dataset. The training stages, the evaluation, the in-training
validation and the figures all read through :func:`open_source`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from babelrs_core.io.images import ImageReadError, load_image

MB = 1 << 20


@dataclass(frozen=True)
class ImageRef:
    """Where one image's pixels are: its id (shards), file (loose files) and manifest window."""

    image_id: str
    path: str
    crop_x: int = 0
    crop_y: int = 0
    width: int | None = None
    height: int | None = None

    @classmethod
    def of_item(cls, item: Mapping[str, Any]) -> ImageRef:
        """From a detector data item (``img_id``, ``img_path``, window)."""
        return cls(
            str(item["img_id"]),
            str(item["img_path"]),
            int(item["crop_x"]),
            int(item["crop_y"]),
            int(item["width"]),
            int(item["height"]),
        )

    @classmethod
    def of_row(cls, row: Any) -> ImageRef:
        """From a manifest row (a namedtuple, a Series or a mapping with the image columns)."""

        def get(key: str) -> Any:
            return row[key] if isinstance(row, Mapping) else getattr(row, key)

        return cls(
            str(get("image_id")),
            str(get("path")),
            int(get("crop_x")),
            int(get("crop_y")),
            int(get("width")),
            int(get("height")),
        )


class ImageSource(Protocol):
    """Decoded ``(H, W, 3)`` uint8 pixels of an image reference."""

    def load(self, ref: ImageRef) -> np.ndarray: ...


class FileSource:
    """The loose image files named by the manifest."""

    def load(self, ref: ImageRef) -> np.ndarray:
        return load_image(ref.path, ref.crop_x, ref.crop_y, ref.width, ref.height)

    def __repr__(self) -> str:
        return "FileSource()"


class ShardSource:
    """The images inside the shards, by ``image_id`` through the shard index (random access).

    The reader (index in memory, a few open shard files) is opened lazily in each process, so a
    source handed to DataLoader workers opens its own files there.
    """

    def __init__(self, index: str | os.PathLike[str]) -> None:
        self.index = Path(index)
        self._reader: Any = None
        self._pid = -1

    def _open(self) -> Any:
        if self._reader is None or self._pid != os.getpid():
            from babelrs_core.data.shards import ShardReader

            self._reader = ShardReader(self.index)
            self._pid = os.getpid()
        return self._reader

    def load(self, ref: ImageRef) -> np.ndarray:
        reader = self._open()
        if ref.image_id not in reader:
            raise ImageReadError(
                f"{self.index}: no image {ref.image_id!r} in the shard index (the shards are "
                "older than the manifest: run `babelrs stage shard`)"
            )
        return reader.load(ref.image_id, ref.crop_x, ref.crop_y, ref.width, ref.height)

    def __getstate__(self) -> dict[str, Any]:
        return {"index": self.index, "_reader": None, "_pid": -1}

    def __repr__(self) -> str:
        return f"ShardSource({str(self.index)!r})"


class CachedSource:
    """A bounded LRU cache of decoded windows in front of another source.

    At most ``max_bytes`` of pixels are held (an image larger than the bound is never cached);
    cached arrays are read-only, so callers that modify pixels copy them first. Thread-safe.
    """

    def __init__(self, inner: ImageSource, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[ImageRef, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = self.misses = self.evictions = 0

    def load(self, ref: ImageRef) -> np.ndarray:
        with self._lock:
            img = self._items.get(ref)
            if img is not None:
                self._items.move_to_end(ref)
                self.hits += 1
                return img
            self.misses += 1
        img = self.inner.load(ref)
        if img.nbytes > self.max_bytes:
            return img
        img.setflags(write=False)
        with self._lock:
            if ref not in self._items:
                self._items[ref] = img
                self.bytes += img.nbytes
                while self.bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self.bytes -= old.nbytes
                    self.evictions += 1
                self.peak_bytes = max(self.peak_bytes, self.bytes)
        return img

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def stats(self) -> dict[str, int]:
        """Hits, misses, evictions, bytes now and at most (for logs and tests)."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "bytes": self.bytes,
            "peak_bytes": self.peak_bytes,
            "max_bytes": self.max_bytes,
        }

    def __getstate__(self) -> dict[str, Any]:
        """Pickled empty (each process fills its own cache)."""
        return {"inner": self.inner, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], state["max_bytes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"CachedSource({self.inner!r}, max_bytes={self.max_bytes})"


def source_spec(params: Any) -> dict[str, Any]:
    """The plain-data description of the params' image source (goes into mmengine configs)."""
    cfg = params.images
    return {
        "source": cfg.source,
        "index": str(params.shards.index),
        "cache_mb": float(cfg.cache_mb),
        "workers": int(cfg.loader_workers),
    }


_SOURCES: dict[tuple[Any, ...], ImageSource] = {}


def source_from_spec(spec: Mapping[str, Any] | None = None) -> ImageSource:
    """The image source a :func:`source_spec` describes, one per spec and process (so that every
    dataset of a run shares one cache). ``None``: loose files, no cache."""
    spec = dict(spec or {"source": "files", "cache_mb": 0})
    key = (spec["source"], spec.get("index"), spec.get("cache_mb", 0), spec.get("workers", 0))
    pid = os.getpid()
    found = _SOURCES.get((pid, *key))
    if found is not None:
        return found
    base: ImageSource
    if spec["source"] == "files":
        base = FileSource()
    elif spec["source"] == "shards":
        base = ShardSource(spec["index"])
    else:
        raise ValueError(f"unknown image source {spec['source']!r}; expected files | shards")
    budget = int(float(spec.get("cache_mb", 0)) * MB / max(1, int(spec.get("workers", 0))))
    source: ImageSource = CachedSource(base, budget) if budget > 0 else base
    _SOURCES[(pid, *key)] = source
    return source


def open_source(params: Any, cache: bool = True) -> ImageSource:
    """The image source of ``params.images`` (one per process); ``cache=False`` for a single
    pass over the images (the LRU cache would only hold images never read again)."""
    spec = source_spec(params)
    return source_from_spec(spec if cache else {**spec, "cache_mb": 0})


def clear_caches() -> None:
    """Forget every cached source and its decoded images (tests, between runs)."""
    for source in _SOURCES.values():
        if isinstance(source, CachedSource):
            source.clear()
    _SOURCES.clear()
