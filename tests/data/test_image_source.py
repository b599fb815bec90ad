"""The image source: loose files and shards give the same pixels, the cache is bounded by
params (not by the data), errors name the file, sources cross into DataLoader workers."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from babelrs_core.data.image_source import (
    MB,
    CachedSource,
    FileSource,
    ImageRef,
    ShardSource,
    clear_caches,
    open_source,
    source_from_spec,
)
from babelrs_core.data.manifest import images, read_manifest
from babelrs_core.data.shards import INDEX_NAME, write_shards
from babelrs_core.io.images import ImageReadError
from tests.data import fake_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fake dataset and its shards: (manifest, shard index)."""
    base = tmp_path_factory.mktemp("src")
    fake_data.make_dataset(base)
    manifest = base / "manifest" / "fake.parquet"
    write_shards(manifest, base / "shards", 0.02)
    return manifest, base / "shards" / INDEX_NAME


def _refs(manifest: Path) -> list[ImageRef]:
    return [ImageRef.of_row(r) for r in images(read_manifest(manifest)).itertuples(index=False)]


def test_files_and_shards_give_the_same_pixels(packed: tuple[Path, Path]) -> None:
    manifest, index = packed
    refs = _refs(manifest)
    shards = ShardSource(index)
    for ref in refs:
        np.testing.assert_array_equal(shards.load(ref), FileSource().load(ref))
    border = next(r for r in refs if r.crop_x > 0)  # DroneVehicle: the window drops the border
    assert shards.load(border).shape == (border.height, border.width, 3)


def test_cache_holds_at_most_its_bound_and_serves_repeats(packed: tuple[Path, Path]) -> None:
    manifest, _ = packed
    refs = _refs(manifest)
    sizes = [FileSource().load(r).nbytes for r in refs]
    bound = sum(sizes) // 3  # a third of the data
    cache = CachedSource(FileSource(), bound)
    for _ in range(3):
        for ref in refs:
            img = cache.load(ref)
            assert not img.flags.writeable  # shared pixels cannot be changed by a transform
            assert cache.bytes <= bound
    stats = cache.stats()
    assert stats["peak_bytes"] <= bound and stats["evictions"] > 0
    assert stats["misses"] + stats["hits"] == 3 * len(refs)
    again = cache.load(refs[-1])  # the last read is the most recent: a hit
    assert cache.stats()["hits"] == stats["hits"] + 1
    np.testing.assert_array_equal(again, FileSource().load(refs[-1]))
    whole = CachedSource(FileSource(), sum(sizes))
    for _ in range(2):
        for ref in refs:
            whole.load(ref)
    assert whole.stats()["misses"] == len(refs) and whole.stats()["evictions"] == 0


def test_an_image_larger_than_the_cache_is_read_but_not_kept(packed: tuple[Path, Path]) -> None:
    manifest, _ = packed
    cache = CachedSource(FileSource(), 16)
    img = cache.load(_refs(manifest)[0])
    assert img.size > 0 and cache.bytes == 0


def test_params_pick_the_source_and_split_the_budget_over_workers(
    packed: tuple[Path, Path],
) -> None:
    from tests.detector.det_fakes import tiny_params

    _, index = packed
    clear_caches()
    files = open_source(tiny_params(index.parent, **{"images.cache_mb": 0}))
    assert isinstance(files, FileSource)
    over = {"images.source": "shards", "shards.index": str(index), "images.loader_workers": 4}
    shards = open_source(tiny_params(index.parent, **over, **{"images.cache_mb": 64}))
    assert isinstance(shards, CachedSource) and isinstance(shards.inner, ShardSource)
    assert shards.max_bytes == 16 * MB  # 64 MB over 4 worker processes
    assert open_source(tiny_params(index.parent, **over, **{"images.cache_mb": 64})) is shards
    single = open_source(tiny_params(index.parent, **over), cache=False)
    assert isinstance(single, ShardSource)
    with pytest.raises(ValueError, match="unknown image source"):
        source_from_spec({"source": "s3"})
    clear_caches()


def test_errors_name_the_file_or_the_shard(packed: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, index = packed
    ref = _refs(manifest)[0]
    with pytest.raises(ImageReadError, match=r"no image .sardet/train/nope. in the shard index"):
        ShardSource(index).load(ImageRef("sardet/train/nope", "x.png"))
    with pytest.raises(ImageReadError, match=r"x\.png: image file not found"):
        FileSource().load(ImageRef("a", str(tmp_path / "x.png")))
    too_big = ImageRef(ref.image_id, ref.path, 0, 0, 10_000, 10)
    with pytest.raises(ImageReadError, match=r"\[" + ref.image_id + r"\].*smaller than"):
        ShardSource(index).load(too_big)
    # a shard whose bytes are garbage: the error names the shard and the image
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in index.parent.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    source = ShardSource(broken / INDEX_NAME)
    shard = source._open().index.set_index("image_id").loc[ref.image_id]
    with open(broken / shard["shard"], "r+b") as fh:
        fh.seek(int(shard["offset"]))
        fh.write(b"\0" * int(shard["size"]))
    with pytest.raises(ImageReadError, match=rf"{shard['shard']}\[{ref.image_id}\]: cannot decode"):
        ShardSource(broken / INDEX_NAME).load(ref)


class _Pixels(torch.utils.data.Dataset):
    def __init__(self, source: object, refs: list[ImageRef]) -> None:
        self.source, self.refs = source, refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> int:
        return int(self.source.load(self.refs[i]).astype(np.int64).sum())  # type: ignore[attr-defined]


def test_sources_cross_into_dataloader_workers(packed: tuple[Path, Path]) -> None:
    manifest, index = packed
    refs = _refs(manifest)
    source = CachedSource(ShardSource(index), 4 * MB)
    source.load(refs[0])  # an open shard file and a filled cache in the parent
    clone = pickle.loads(pickle.dumps(source))
    assert clone.bytes == 0 and clone.inner.index == index  # workers start empty
    want = [int(FileSource().load(r).astype(np.int64).sum()) for r in refs]
    for ctx in ("fork", "spawn"):
        loader = torch.utils.data.DataLoader(
            _Pixels(source, refs), batch_size=None, num_workers=2, multiprocessing_context=ctx
        )
        assert list(loader) == want


#: decoded size of each image of the memory test (2048 x 2048 RGB)
_BIG = 2048 * 2048 * 3


def test_memory_stays_bounded_by_the_cache_not_by_the_data(tmp_path: Path) -> None:
    """40 images of 12 MiB decoded (480 MiB in all) read three times through a 24 MiB cache: the
    process's resident memory grows by about the cache, not by the data."""
    refs = []
    for i in range(40):
        path = tmp_path / f"big{i}.png"
        Image.new("RGB", (2048, 2048), (i, 2 * i, 3 * i)).save(path)  # tiny file, big decode
        refs.append((f"big/{i}", str(path)))
    script = textwrap.dedent(
        f"""
        import json, resource
        from babelrs_core.data.image_source import CachedSource, FileSource, ImageRef

        def rss_mb():
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * resource.getpagesize() / 2**20

        refs = [ImageRef(i, p, 0, 0, 2048, 2048) for i, p in {refs!r}]
        cache = CachedSource(FileSource(), 24 * 2**20)
        cache.load(refs[0])
        base, peak = rss_mb(), 0.0
        for _ in range(3):
            for ref in refs:
                cache.load(ref)
                peak = max(peak, rss_mb())
        print(json.dumps({{"growth_mb": peak - base, "stats": cache.stats()}}))
        """
    )
    # large buffers straight from mmap: freed pixels go back to the system at once, so resident
    # memory shows what is held, not what glibc keeps around for reuse
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    run = [sys.executable, "-c", script]
    out = subprocess.run(run, capture_output=True, text=True, cwd=REPO, check=True, env=env)

    result = json.loads(out.stdout.strip().splitlines()[-1])
    data_mb = 40 * _BIG / MB
    assert result["stats"]["peak_bytes"] <= 24 * MB and result["stats"]["evictions"] > 100
    # the cache (24) plus a few images being decoded / freed (12 each), never the data (480)
    assert result["growth_mb"] < 24 + 4 * _BIG / MB, result
    assert result["growth_mb"] < data_mb / 4, result
