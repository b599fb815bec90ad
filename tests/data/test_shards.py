"""Content-addressed tar shards: exact round trip, determinism, stability under edits and
insertions, random access and streaming, clear errors."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from babelrs_core import stages
from babelrs_core.cli import app
from babelrs_core.data.manifest import images, read_manifest, write_manifest
from babelrs_core.data.shards import (
    INDEX_NAME,
    ShardError,
    ShardReader,
    id_hash,
    plan_shards,
    read_index,
    verify_shards,
    write_shards,
)
from babelrs_core.io.images import load_image
from tests.data import fake_data

TINY_MB = 0.02  # ~20 kB per shard: the fake images are 3-16 kB, so several shards per split


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pristine")
    fake_data.make_dataset(base)
    return base


@pytest.fixture
def dataset(pristine: Path, tmp_path: Path) -> Path:
    """A private copy; returns the manifest path."""
    shutil.copytree(pristine, tmp_path / "d")
    return tmp_path / "d" / "manifest" / "fake.parquet"


def _files(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))
    }


def test_round_trip_is_byte_exact(dataset: Path, tmp_path: Path) -> None:
    report = write_shards(dataset, tmp_path / "shards", TINY_MB)
    frame = images(read_manifest(dataset))
    assert report.images == len(frame) == 9
    assert report.shards == len(list((tmp_path / "shards").glob("*.tar"))) >= 4
    assert verify_shards(tmp_path / "shards") == []
    with ShardReader(tmp_path / "shards", verify=True) as reader:
        assert len(reader) == 9 and "dota/train/Pt000" in reader
        for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
            assert reader.read(image_id) == Path(path).read_bytes()
        streamed = dict(reader.stream())
    assert set(streamed) == set(frame["image_id"])
    for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
        assert streamed[image_id] == Path(path).read_bytes()


def test_decoded_like_the_file_reader(dataset: Path, tmp_path: Path) -> None:
    write_shards(dataset, tmp_path / "shards", TINY_MB)
    row = images(read_manifest(dataset)).query("dataset == 'dronevehicle'").iloc[0]
    window = dict(crop_x=row.crop_x, crop_y=row.crop_y, width=row.width, height=row.height)
    with ShardReader(tmp_path / "shards" / INDEX_NAME) as reader:
        got = reader.load(row.image_id, **window)
    np.testing.assert_array_equal(got, load_image(row.path, **window))
    assert got.shape == (64, 80, 3)


def test_shards_are_plain_deterministic_tars(dataset: Path, tmp_path: Path) -> None:
    write_shards(dataset, tmp_path / "a", TINY_MB)
    write_shards(dataset, tmp_path / "b", TINY_MB)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    for name, digest in _files(tmp_path / "a").items():
        dataset_, split, short = name.removesuffix(".tar").split("-")
        assert digest.startswith(short) and len(short) == 16  # named by content
        with tarfile.open(tmp_path / "a" / name) as tar:
            members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert all(m.name.startswith(f"{dataset_}/{split}/") for m in members)
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)


def test_rerun_reuses_identical_shards(dataset: Path, tmp_path: Path) -> None:
    first = write_shards(dataset, tmp_path / "s", TINY_MB)
    again = write_shards(dataset, tmp_path / "s", TINY_MB)
    assert first.written == first.shards and again.written == 0 and again.removed == 0


def test_changing_one_image_changes_exactly_one_shard(dataset: Path, tmp_path: Path) -> None:
    write_shards(dataset, tmp_path / "s", TINY_MB)
    before = _files(tmp_path / "s")
    index_before = read_index(tmp_path / "s" / INDEX_NAME)
    path = Path(
        images(read_manifest(dataset)).set_index("image_id").loc["dota/train/Pt001", "path"]
    )
    fake_data.noise_image(path, fake_data.SIZES["dota"], "RGB", seed=999)
    report = write_shards(dataset, tmp_path / "s", TINY_MB)
    after = _files(tmp_path / "s")
    assert len(set(before) - set(after)) == 1 and len(set(after) - set(before)) == 1
    assert report.written == 1 and report.removed == 1
    (new,) = set(after) - set(before)
    index = read_index(tmp_path / "s" / INDEX_NAME)
    changed = index.merge(index_before, on="image_id", suffixes=("", "_old"))
    changed = changed[changed["sha256"] != changed["sha256_old"]]
    assert list(changed["image_id"]) == ["dota/train/Pt001"]
    assert index.set_index("image_id").loc["dota/train/Pt001", "shard"] == new


def test_deleted_image_and_stale_shards_are_removed(dataset: Path, tmp_path: Path) -> None:
    write_shards(dataset, tmp_path / "s", TINY_MB)
    frame = read_manifest(dataset)
    write_manifest(frame[frame["image_id"] != "sardet/train/t00000"], dataset)
    report = write_shards(dataset, tmp_path / "s", TINY_MB)
    assert report.images == 8 and report.removed >= 1
    assert verify_shards(tmp_path / "s") == []
    assert "sardet/train/t00000" not in ShardReader(tmp_path / "s")


def _table(ids: list[str], size: int = 1000) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ids,
            "dataset": [i.split("/")[0] for i in ids],
            "split": [i.split("/")[1] for i in ids],
            "path": ids,
            "bytes": size,
        }
    )


def _membership(plan) -> set[tuple[str, ...]]:
    return {tuple(s.image_ids) for s in plan}


def test_insertion_changes_only_the_shard_it_lands_in() -> None:
    ids = [f"dota/train/P{i:05d}" for i in range(0, 6000, 2)]  # room for insertions
    base = plan_shards(_table(ids), target_bytes=20_000)  # K = 20 images per shard
    assert len(base) > 100
    for new in ("dota/train/P00001", "dota/train/P02501", "dota/train/P05999"):
        plan = plan_shards(_table(sorted([*ids, new])), target_bytes=20_000)
        gone = _membership(base) - _membership(plan)
        added = _membership(plan) - _membership(base)
        assert len(gone) == 1 and 1 <= len(added) <= 2  # its shard (split in two at most)
        assert any(new in s for s in added)


def test_shard_sizes_average_the_target_and_groups_stay_apart() -> None:
    ids = [
        f"{d}/{s}/{i:06d}"
        for d in ("dota", "sardet")
        for s in ("train", "val")
        for i in range(5000)
    ]
    plan = plan_shards(_table(ids, size=2000), target_bytes=64_000)  # K = 32
    per_shard = np.array([len(s.image_ids) for s in plan])
    assert 25 < per_shard.mean() < 40
    for s in plan:
        assert {i.rsplit("/", 1)[0] for i in s.image_ids} == {f"{s.dataset}/{s.split}"}
    assert plan_shards(_table(ids[:10]), target_bytes=1e9)[0].image_ids == ids[:10]


def test_id_hash_is_stable() -> None:
    assert id_hash("dota/train/P0000") == id_hash("dota/train/P0000") == 4006026967002051242


def test_reader_errors_name_the_problem(dataset: Path, tmp_path: Path) -> None:
    write_shards(dataset, tmp_path / "s", TINY_MB)
    reader = ShardReader(tmp_path / "s", verify=True)
    with pytest.raises(KeyError, match="not in the shard index"):
        reader.read("dota/train/nope")
    name = reader.index.set_index("image_id").loc["dota/val/Pv000", "shard"]
    offset = int(reader.index.set_index("image_id").loc["dota/val/Pv000", "offset"])
    data = bytearray((tmp_path / "s" / name).read_bytes())
    data[offset + 100] ^= 0xFF
    (tmp_path / "s" / name).write_bytes(bytes(data))
    reader.close()
    with pytest.raises(ShardError, match="do not match"):
        ShardReader(tmp_path / "s", verify=True).read("dota/val/Pv000")
    assert any(name in p for p in verify_shards(tmp_path / "s"))
    (tmp_path / "s" / name).unlink()
    with pytest.raises(ShardError, match="shard not found"):
        ShardReader(tmp_path / "s").read("dota/val/Pv000")
    with pytest.raises(FileNotFoundError, match="shard index not found"):
        ShardReader(tmp_path / "nowhere" / INDEX_NAME)


def test_missing_image_is_reported(dataset: Path, tmp_path: Path) -> None:
    path = Path(images(read_manifest(dataset))["path"].iloc[0])
    path.unlink()
    with pytest.raises(FileNotFoundError, match=path.name):
        write_shards(dataset, tmp_path / "s", TINY_MB)


def test_stage_and_cli(dataset: Path, tmp_path: Path) -> None:
    params = fake_data.params(shards={"target_mb": TINY_MB})
    out = stages.shard(params, dataset, tmp_path / "st", progress=False)
    assert out["images"] == 9 and Path(out["index"]) == tmp_path / "st" / INDEX_NAME
    params_file = tmp_path / "params.yaml"
    params_file.write_text("shards: {target_mb: 0.02}\n")
    result = CliRunner().invoke(
        app,
        [
            *("data", "shard", "-p", str(params_file), "--manifest", str(dataset)),
            *("--out", str(tmp_path / "cli"), "-q"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "cli") == _files(tmp_path / "st")
