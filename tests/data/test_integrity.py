"""Image bytes against the manifest's sha256 (babelrs_core/data/integrity.py), the one comparison
that both the validate stage's ``image_content_unchanged`` check and the training stages'
pre-check use: a changed or missing image is named, an image without a recorded hash is not
checked. (The whole path through the CLI, shards included: tests/faults/test_damaged_data.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.data.integrity import (
    DataIntegrityError,
    check_training_data,
    content_changed,
    content_matches,
    image_hash_problems,
    recorded_sha256,
)
from babelrs_core.data.manifest import read_manifest
from babelrs_core.io.hashing import file_sha256
from tests.data import fake_data

IMAGE = "raw/DroneVehicle/train/trainimgr/00001.jpg"
IMAGE_ID = "dronevehicle/train/00001"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return fake_data.make_dataset(tmp_path)[1]


def _flip_a_byte(image: Path) -> None:
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01  # in the JPEG scan data: it still decodes, silently wrong
    image.write_bytes(bytes(data))


def test_untouched_images_have_no_problem(manifest: Path) -> None:
    frame = read_manifest(manifest)
    assert len(recorded_sha256(frame)) == frame["image_id"].nunique() == 9
    assert image_hash_problems(frame) == []


def test_a_changed_and_a_missing_image_are_named(manifest: Path) -> None:
    root = manifest.parent.parent
    frame = read_manifest(manifest)
    want = recorded_sha256(frame)[IMAGE_ID]
    _flip_a_byte(root / IMAGE)
    (root / "raw/SARDet_100K/JPEGImages/train/t00001.png").unlink()
    got = file_sha256(root / IMAGE)
    assert image_hash_problems(frame) == [
        f"{root / IMAGE} ({IMAGE_ID}): content changed since import: sha256 {got[:16]}... but "
        f"the manifest records {want[:16]}...",
        f"{root}/raw/SARDet_100K/JPEGImages/train/t00001.png (sardet/train/t00001): "
        "image file not found",
    ]


def test_images_without_a_recorded_hash_are_not_checked(manifest: Path) -> None:
    root = manifest.parent.parent
    _flip_a_byte(root / IMAGE)
    frame = read_manifest(manifest)
    unrecorded = frame.assign(sha256=frame["sha256"].where(frame["image_id"] != IMAGE_ID, None))
    assert IMAGE_ID not in recorded_sha256(unrecorded)
    assert image_hash_problems(unrecorded) == []
    assert image_hash_problems(frame.drop(columns="sha256")) == []  # a manifest from before hashes


def test_content_matches_and_its_words() -> None:
    a, b = "a" * 64, "b" * 64
    assert content_matches(a, a) is True and content_matches(a, b) is False
    assert content_matches(None, a) is None  # the file could not be hashed (image_exists says)
    assert content_matches(a, None) is None and content_matches(a, "") is None  # nothing recorded
    assert content_changed(a, b) == (
        f"content changed since import: sha256 {a[:16]}... but the manifest records {b[:16]}..."
    )


def test_training_data_check_names_the_changed_file(manifest: Path, tmp_path: Path) -> None:
    params = fake_data.params(
        paths={"manifest": str(manifest)}, shards={"index": str(tmp_path / "no_shards.parquet")}
    )
    check_training_data(params)  # untouched: passes
    _flip_a_byte(manifest.parent.parent / IMAGE)
    with pytest.raises(DataIntegrityError, match=r"1 data file\(s\) changed or damaged") as info:
        check_training_data(params)
    assert f"{manifest.parent.parent / IMAGE} ({IMAGE_ID}): content changed" in str(info.value)


def test_training_from_shards_checks_the_index_against_the_manifest(
    manifest: Path, tmp_path: Path
) -> None:
    from babelrs_core.data.shards import INDEX_NAME, write_shards

    write_shards(manifest, tmp_path / "shards", 0.02)
    index = tmp_path / "shards" / INDEX_NAME
    params = fake_data.params(
        paths={"manifest": str(manifest)},
        shards={"dir": str(tmp_path / "shards"), "index": str(index)},
        images={"source": "shards"},
    )
    (manifest.parent.parent / IMAGE).unlink()  # the loose files do not matter any more
    check_training_data(params)
    # an image re-imported with other bytes after the shards were written: the shards are stale
    frame = read_manifest(manifest)
    frame.loc[frame["image_id"] == IMAGE_ID, "sha256"] = "0" * 64
    frame.to_parquet(manifest)
    with pytest.raises(DataIntegrityError, match=rf"\({IMAGE_ID}\): the shards hold other bytes"):
        check_training_data(params)
