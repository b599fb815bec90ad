"""Scene captions are part of the data contract: imported beside the manifest, checked by the
validate stage, read by pretraining (never from the raw folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from babelrs_core import stages
from babelrs_core.config import load_params
from babelrs_core.data.captions import read_captions
from babelrs_core.data.manifest import read_manifest
from babelrs_core.data.validation.report import DataValidationError

ROOT = Path(__file__).resolve().parents[2]
#: nine train images (a tiny set cannot hold every class in a held-out split too)
TINY = {f"soi_mini.{d}.splits": {"train": 3} for d in ("sardet", "dota", "dronevehicle")}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("captions")
    params = load_params(
        ROOT / "params.yaml",
        {
            **TINY,
            "paths.raw": str(work / "raw"),
            "paths.manifest": str(work / "m.parquet"),
            "validation.out_dir": str(work / "validation"),
            "validation.data_docs": False,
            "validation.required_splits": ["train"],
            "validation.train_classes": "observed",
        },
    )
    stages.generate(params, progress=False)
    result = stages.import_data(params, progress=False)
    return params, result


def test_import_writes_every_image_caption_beside_the_manifest(imported) -> None:
    params, result = imported
    assert params.paths.captions == Path(params.paths.manifest).with_name("m.captions.parquet")
    table = pd.read_parquet(params.paths.captions)
    frame = read_manifest(params.paths.manifest)
    assert result["captions"] == len(table) == frame["image_id"].nunique() == 9
    assert set(table["image_id"]) == set(frame["image_id"])
    assert table["caption"].str.len().min() > 10
    captions = read_captions(params.paths.captions)
    assert captions[table["image_id"][0]] == table["caption"][0]


def test_pretraining_needs_no_raw_scenes(imported, tmp_path: Path) -> None:
    """The captions pretraining sees come from the table: the scenes folder can be gone."""
    from babelrs_core.pretrain.dataset import labels_from_manifest

    params, _ = imported
    copy = tmp_path / "raw-without-scenes"
    shutil.copytree(params.paths.raw, copy, ignore=shutil.ignore_patterns("scenes"))
    frame = read_manifest(params.paths.manifest)
    labels = labels_from_manifest(frame, read_captions(params.paths.captions))
    assert sum(1 for x in labels if x.caption) == 9


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("unknown", "caption for 'sardet/train/nope', an image the manifest does not have"),
        ("empty", "empty caption for"),
        ("duplicate", "more than one caption for"),
    ],
)
def test_validate_names_a_bad_captions_table(imported, damage: str, message: str) -> None:
    params, _ = imported
    path = Path(params.paths.captions)
    good = pd.read_parquet(path)
    bad = good.copy()
    if damage == "unknown":
        bad.loc[0, "image_id"] = "sardet/train/nope"
    elif damage == "empty":
        bad.loc[1, "caption"] = "  "
    else:
        bad = pd.concat([bad, bad.iloc[[2]]])
    bad.to_parquet(path, index=False)
    try:
        with pytest.raises(DataValidationError) as err:
            stages.validate(params, progress=False)
    finally:
        good.to_parquet(path, index=False)
    (failure,) = [f for f in err.value.report.failures if f.check == "captions_match_manifest"]
    assert failure.count == 1 and message in failure.examples[0]
    assert str(path) in failure.examples[0]
    assert stages.validate(params, progress=False)["passed"]  # the good table passes again
