"""import_datasets: counts, drops, unique ids, Parquet round trip, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from babelrs_core.config import Params
from babelrs_core.data import formats
from babelrs_core.data.formats.errors import IGNORED_CLASS, IN_BORDER, FormatError
from babelrs_core.data.importing import import_datasets, import_soi_mini
from babelrs_core.data.manifest import COLUMNS, ManifestRow, images, objects, read_manifest
from tests.fixtures import make_fixtures


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    raw = tmp_path / "data" / "raw"
    make_fixtures.materialize_all(raw)
    return raw


@pytest.fixture
def roots(raw: Path) -> dict[str, Path]:
    return {name: raw / sub for name, sub in make_fixtures.ROOT_NAMES.items()}


def _import(roots, manifest: Path, params: Params | None = None):
    return import_datasets(roots, manifest, params or Params(), progress=False)


def test_report_counts_per_dataset_modality_and_split(roots, tmp_path: Path) -> None:
    report = _import(roots, tmp_path / "m.parquet")
    counts = {k: (c.images, c.objects, c.rows) for k, c in report.counts.items()}
    assert counts == {
        ("sardet", "sar", "train"): (3, 4, 6),
        ("sardet", "sar", "val"): (1, 2, 2),
        ("dota", "rgb", "train"): (5, 9, 11),
        ("dota", "rgb", "val"): (1, 1, 1),
        ("dronevehicle", "ir", "train"): (3, 5, 6),
        ("dronevehicle", "ir", "val"): (1, 3, 3),
    }
    assert (report.images, report.objects, report.rows) == (14, 24, 29)


def test_report_lists_dropped_objects_with_reasons(roots, tmp_path: Path) -> None:
    report = _import(roots, tmp_path / "m.parquet")
    by_reason = report.dropped_by_reason()
    assert by_reason[("dronevehicle", IGNORED_CLASS)] == 2
    assert by_reason[("dronevehicle", IN_BORDER)] == 1
    assert sum(n for (d, _), n in by_reason.items() if d == "sardet") == 4
    assert sum(n for (d, _), n in by_reason.items() if d == "dota") == 2
    assert [(d.dataset, d.split) for d in report.skipped_splits] == [("dota", "test")]
    summary = report.summary()
    assert "dropped 2 dronevehicle object(s): ignored class" in summary
    assert "skipped dota test" in summary
    json.dumps(report.to_dict())  # JSON-ready for the CLI


def test_rgb_and_ir_dronevehicle_together(roots, tmp_path: Path) -> None:
    params = Params.model_validate({"importers": {"dronevehicle_modalities": ["ir", "rgb"]}})
    report = _import(roots, tmp_path / "m.parquet", params)
    assert report.counts[("dronevehicle", "rgb", "train")].images == 1
    frame = read_manifest(tmp_path / "m.parquet")
    assert frame["image_id"].str.endswith("_rgb").sum() == 2


def test_manifest_round_trips_through_parquet(roots, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest" / "m.parquet"
    _import(roots, manifest)
    frame = read_manifest(manifest)
    assert tuple(frame.columns) == COLUMNS
    expected = []
    for name, root in roots.items():
        expected += list(formats.get_reader(name)(root, Params().importers))
    assert len(frame) == len(expected)
    by_key = {(r.image_id, r.object_index): r for r in expected}
    for rec in frame.to_dict("records"):
        row = by_key[(rec["image_id"], rec["object_index"])]
        assert Path(rec["path"]).resolve() == Path(row.path)
        assert (rec["width"], rec["height"], rec["crop_x"]) == (row.width, row.height, row.crop_x)
        assert rec["label"] == row.label and rec["source_line"] == row.source_line
        if row.poly is None:
            assert pd.isna(rec["class_name"]) and rec["poly"] is None and pd.isna(rec["x1"])
        else:
            assert (rec["class_name"], rec["raw_class"]) == (row.class_name, row.raw_class)
            assert list(rec["poly"]) == row.poly and rec["x1"] == row.x1
    assert len(images(frame)) == 14 and len(objects(frame)) == 24


def test_manifest_paths_are_relative_and_resolve(roots, tmp_path: Path) -> None:
    manifest = tmp_path / "data" / "manifest" / "m.parquet"
    _import(roots, manifest)
    relative = read_manifest(manifest, absolute=False)
    assert all(not Path(p).is_absolute() for p in relative["path"])
    assert relative["path"].iloc[0].startswith("../raw/")
    # relocate the whole data folder: the manifest still finds its images
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "data", moved)
    frame = read_manifest(moved / "manifest" / "m.parquet")
    assert all(Path(p).is_file() for p in frame["path"])


def test_failing_import_leaves_existing_manifest_and_no_temp_files(roots, tmp_path: Path) -> None:
    manifest = tmp_path / "out" / "m.parquet"
    _import(roots, manifest)
    before = manifest.read_bytes()
    bad = roots["dronevehicle"] / "val" / "vallabelr" / "00001.xml"
    bad.write_text("<annotation><object></annotation>")
    with pytest.raises(FormatError, match="malformed XML"):
        _import(roots, manifest)
    assert manifest.read_bytes() == before
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["m.parquet"]


def test_failing_first_import_writes_nothing(roots, tmp_path: Path) -> None:
    (roots["sardet"] / "Annotations" / "val.json").write_text("{")
    out = tmp_path / "out"
    with pytest.raises(FormatError):
        _import(roots, out / "m.parquet")
    assert not out.exists() or list(out.iterdir()) == []


def test_duplicate_image_ids_are_an_error(roots, tmp_path: Path, monkeypatch) -> None:
    def twice(root, params, splits=None, on_drop=None):
        for stem in ("a", "b", "a"):
            yield ManifestRow(f"dota/train/{stem}", "dota", "rgb", "train", f"/x/{stem}.png", 8, 8)

    monkeypatch.setitem(formats.READERS, "dota", twice)
    with pytest.raises(FormatError, match=r"image id 'dota/train/a' is also used by /x/a\.png"):
        _import({"dota": roots["dota"]}, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_unknown_dataset_and_missing_folder(roots, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known: sardet, dota, dronevehicle"):
        _import({"xview": roots["dota"]}, tmp_path / "m.parquet")
    with pytest.raises(FileNotFoundError, match="dota dataset folder not found"):
        _import({"dota": tmp_path / "nope"}, tmp_path / "m.parquet")


def test_import_soi_mini_uses_the_params_paths(raw: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest" / "soi.parquet"
    params = Params.model_validate({"paths": {"raw": str(raw), "manifest": str(manifest)}})
    report = import_soi_mini(params, progress=True)
    assert report.manifest_path == manifest and manifest.is_file()
    assert set(read_manifest(manifest)["dataset"]) == {"sardet", "dota", "dronevehicle"}
