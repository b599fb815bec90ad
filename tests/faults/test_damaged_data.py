"""Data damaged after import and shard is named before any training: one byte flipped in one
image (its sha256 no longer the manifest's) and, separately, one shard tar truncated.

The validate stage fails (exit 2, bad data) naming the file and the problem in its report; the
training stages' own pre-check fails the same way before they start, and no training output is
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from babelrs_core.config import load_params
from babelrs_core.data.manifest import read_manifest
from babelrs_core.data.shards import INDEX_NAME, read_index
from babelrs_core.data.validation.stage import run_validation
from tests.data import fake_data
from tests.faults.faultkit import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """Fake raw data imported into a manifest and sharded; returns (params file, shard folder)."""
    _, manifest = fake_data.make_dataset(tmp_path / "data")
    shards = tmp_path / "data" / "shards"
    params = fake_data.params().model_dump(mode="json")
    params["paths"].update(
        manifest=str(manifest),
        captions=None,  # beside this manifest, not the default manifest's (a dump resolved it)
        pretrain_out=str(tmp_path / "out" / "pretrain"),
        finetune_out=str(tmp_path / "out" / "finetune"),
    )
    params["shards"].update(dir=str(shards), index=str(shards / INDEX_NAME), target_mb=0.02)
    params["validation"]["out_dir"] = str(tmp_path / "out" / "validation")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    code, log = run_cli("data", "shard", "--params", str(path), "--quiet", cwd=tmp_path)
    assert code == 0, log
    report = run_validation(load_params(path))  # the data as imported and sharded passes
    assert report.passed, report.markdown()
    return path, shards


def _stage(name: str, params: Path) -> tuple[int, str]:
    return run_cli(
        "stage",
        name,
        "--params",
        str(params),
        "--no-track",
        "--quiet",
        cwd=params.parent,
        timeout=300,
    )


def _nothing_trained(root: Path) -> None:
    for stage in ("pretrain", "finetune"):
        out = root / "out" / stage
        assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


def _report(root: Path) -> dict:
    return json.loads((root / "out" / "validation" / "report.json").read_text())


def test_a_flipped_byte_in_an_image_is_named(project: tuple[Path, Path]) -> None:
    params, _ = project
    root = params.parent
    image = root / "data" / "raw" / "DroneVehicle" / "train" / "trainimgr" / "00001.jpg"
    frame = read_manifest(root / "data" / "manifest" / "fake.parquet")
    (image_id,) = frame.loc[frame["path"] == str(image), "image_id"].unique()
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the JPEG scan data: it still decodes, silently wrong
    image.write_bytes(bytes(data))
    rel = image.relative_to(root)

    code, log = _stage("validate", params)
    assert code == 2, log  # bad data (the CLI's exit status for bad input)
    assert "FAILED image_content_unchanged" in log and "content changed since import" in log, log
    # only the hash catches it: the image decodes, with the right size, channels and dtype
    assert [f["check"] for f in _report(root)["failures"]] == ["image_content_unchanged"]
    (failure,) = _report(root)["failures"]
    assert failure["count"] == 1
    assert failure["examples"][0].startswith(f"{rel} ({image_id}): content changed"), failure

    for stage in ("pretrain", "finetune"):
        code, log = _stage(stage, params)
        assert code == 2, log
        assert f"{image} ({image_id}): content changed since import" in log, log
        assert "1 data file(s) changed or damaged" in log and "Traceback" not in log, log
    _nothing_trained(root)


def test_a_truncated_shard_is_named(project: tuple[Path, Path]) -> None:
    params, shards = project
    root = params.parent
    index = read_index(shards / INDEX_NAME)
    assert index["shard"].nunique() >= 3
    shard = shards / sorted(index["shard"].unique())[1]
    size = shard.stat().st_size
    with open(shard, "r+b") as fh:
        fh.truncate(size // 2)  # an interrupted copy

    code, log = _stage("validate", params)
    assert code == 2, log
    assert "FAILED shards_intact" in log, log
    assert [f["check"] for f in _report(root)["failures"]] == ["shards_intact"]
    (failure,) = _report(root)["failures"]
    assert failure["count"] == 1
    assert failure["examples"][0].startswith(f"{shard}: truncated: {size // 2} bytes"), failure

    for stage in ("pretrain", "finetune"):
        code, log = _stage(stage, params)
        assert code == 2, log
        assert f"{shard}: truncated: {size // 2} bytes, but the index needs" in log, log
    _nothing_trained(root)
