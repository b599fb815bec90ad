"""SARDet-100K reader: every quirk of docs/soi_mini.md §5.1 (COCO JSON, category ids, file_name
styles)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from babelrs_core.config import Importers
from babelrs_core.data.formats import sardet
from babelrs_core.data.formats.errors import (
    OUTSIDE_IMAGE,
    TOO_SMALL,
    ZERO_AREA,
    FormatError,
)
from tests.data.formats.reading import read_all
from tests.fixtures import make_fixtures

PARAMS = Importers()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_fixtures.materialize("sardet", tmp_path)


def _read(root: Path, splits=None, drops=None):
    return read_all(sardet.read, root, PARAMS, splits, drops)


def _edit(root: Path, split: str, change) -> None:
    path = root / "Annotations" / f"{split}.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _comparable(rows):
    return [{k: v for k, v in asdict(r).items() if k != "source_file"} for r in rows]


def test_reads_both_splits_with_absolute_paths(root: Path) -> None:
    rows = _read(root)
    assert {r.split for r in rows} == {"train", "val"}
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in rows)
    assert {r.modality for r in rows} == {"sar"}
    ids = [r.image_id for r in rows]
    assert "sardet/train/000001" in ids and "sardet/val/000101" in ids


def test_bbox_xywh_becomes_x1y1x2y2_and_polygon(root: Path) -> None:
    ship = next(r for r in _read(root, ["train"]) if r.class_name == "ship")
    assert (ship.x1, ship.y1, ship.x2, ship.y2) == (10.0, 12.0, 30.0, 20.0)
    assert ship.poly == [10.0, 12.0, 30.0, 12.0, 30.0, 20.0, 10.0, 20.0]
    assert ship.label == 0 and ship.raw_class == "ship" and ship.source_line == 0


def test_zero_based_and_one_based_category_ids_give_the_same_rows(root: Path) -> None:
    before = _read(root, ["train"])

    def shift(data):
        for c in data["categories"]:
            c["id"] += 1
        for a in data["annotations"]:
            a["category_id"] += 1

    _edit(root, "train", shift)
    assert _comparable(_read(root, ["train"])) == _comparable(before)


def test_categories_are_mapped_by_name_not_by_id(root: Path) -> None:
    # val.json is 1-based: id 1 is ship, id 6 harbor; the first two object classes follow the names
    rows = [r for r in _read(root, ["val"]) if r.object_index >= 0]
    assert [r.class_name for r in rows] == ["ship", "bridge"]

    def scramble(data):  # reverse the category list and renumber: names still decide
        names = {c["id"]: c["name"] for c in data["categories"]}
        new_id = {old: 100 - old for old in names}
        data["categories"] = [{"id": new_id[i], "name": n} for i, n in reversed(names.items())]
        for a in data["annotations"]:
            a["category_id"] = new_id[a["category_id"]]

    _edit(root, "val", scramble)
    assert [r.class_name for r in _read(root, ["val"]) if r.object_index >= 0] == ["ship", "bridge"]


def test_file_name_relative_to_jpegimages_and_to_the_split_folder(root: Path) -> None:
    train = _read(root, ["train"])  # "train/000001.png" (relative to JPEGImages/)
    val = _read(root, ["val"])  # "000101.png" (relative to JPEGImages/val/)
    assert train[0].path == str(root / "JPEGImages" / "train" / "000001.png")
    assert val[0].path == str(root / "JPEGImages" / "val" / "000101.png")

    def strip(data):
        for img in data["images"]:
            img["file_name"] = img["file_name"].removeprefix("train/")

    _edit(root, "train", strip)
    assert _comparable(_read(root, ["train"])) == _comparable(train)


def test_soi_det_after_merge_file_name_is_accepted(root: Path) -> None:
    ann = root / "Annotations"
    (ann / "val.json").rename(ann / "after_merge_val.json")
    rows = _read(root)
    assert {r.split for r in rows} == {"train", "val"}
    assert all(r.source_file.endswith("after_merge_val.json") for r in rows if r.split == "val")


def test_degenerate_and_outside_boxes_are_dropped_and_reported(root: Path) -> None:
    drops = []
    rows = _read(root, ["train"], drops)
    reasons = sorted((d.line, d.reason) for d in drops)
    assert reasons == [(3, TOO_SMALL), (4, ZERO_AREA), (5, OUTSIDE_IMAGE), (6, ZERO_AREA)]
    assert all(d.dataset == "sardet" and d.split == "train" for d in drops)
    assert all(r.source_line not in (3, 4, 5, 6) for r in rows if r.object_index >= 0)


def test_boxes_are_clipped_to_the_image(root: Path) -> None:
    harbor = next(r for r in _read(root, ["train"]) if r.class_name == "harbor")
    assert (harbor.x1, harbor.y1, harbor.x2, harbor.y2) == (50.0, 30.0, 64.0, 48.0)
    assert max(harbor.poly[0::2]) == 64.0 and max(harbor.poly[1::2]) == 48.0


def test_min_box_size_param_drops_small_boxes(root: Path) -> None:
    drops = []
    rows = list(sardet.read(root, Importers(min_box_size_px=10), ["train"], drops.append))
    assert [r.class_name for r in rows if r.image_id.endswith("000001")] == [
        "aircraft",
        "harbor",
    ]  # ship is 20x8, the crowd car 6x6
    assert sum(d.reason == TOO_SMALL for d in drops) == 3


def test_images_without_objects_keep_one_row(root: Path) -> None:
    rows = _read(root, ["train"])
    empty = [r for r in rows if r.image_id == "sardet/train/000002"]
    assert len(empty) == 1 and empty[0].object_index == -1 and empty[0].class_name is None
    # 000003 has annotations, all dropped: still one row
    dropped_all = [r for r in rows if r.image_id == "sardet/train/000003"]
    assert [r.object_index for r in dropped_all] == [-1]


def test_iscrowd_objects_are_marked_difficult(root: Path) -> None:
    car = next(r for r in _read(root, ["train"]) if r.class_name == "car")
    assert car.difficult is True


def test_object_indices_are_consecutive_per_image(root: Path) -> None:
    rows = [r for r in _read(root, ["train"]) if r.image_id == "sardet/train/000001"]
    assert [r.object_index for r in rows] == [0, 1, 2, 3]


def test_unknown_category_name_is_an_error_naming_the_file(root: Path) -> None:
    _edit(root, "train", lambda d: d["categories"][3].update(name="oil-rig"))
    with pytest.raises(FormatError) as err:
        _read(root, ["train"])
    msg = str(err.value)
    assert msg.startswith(f"{root / 'Annotations' / 'train.json'}:3: ")
    assert "'oil-rig'" in msg and "ship, aircraft, car, tank, bridge, harbor" in msg


def test_bad_json_is_an_error_naming_the_file_and_line(root: Path) -> None:
    path = root / "Annotations" / "val.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(FormatError) as err:
        _read(root, ["val"])
    assert err.value.path == path and err.value.line == 2
    assert str(err.value).startswith(f"{path}:2: invalid JSON")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key_is_an_error(root: Path, key: str) -> None:
    _edit(root, "val", lambda d: d.pop(key))
    with pytest.raises(FormatError, match=f"missing key '{key}'"):
        _read(root, ["val"])


def test_missing_annotation_field_names_the_annotation_index(root: Path) -> None:
    _edit(root, "train", lambda d: d["annotations"][2].pop("bbox"))
    with pytest.raises(FormatError, match=r"train\.json:2: annotations\[2\] lacks 'bbox'"):
        _read(root, ["train"])


def test_annotation_pointing_to_unknown_image_is_an_error(root: Path) -> None:
    _edit(root, "train", lambda d: d["annotations"][5].update(image_id=999))
    with pytest.raises(FormatError, match=r"train\.json:5: annotations\[5\]: image_id 999"):
        _read(root, ["train"])


def test_unknown_category_id_is_an_error(root: Path) -> None:
    _edit(root, "train", lambda d: d["annotations"][1].update(category_id=42))
    with pytest.raises(FormatError, match=r"train\.json:1: .*category_id 42"):
        _read(root, ["train"])


def test_size_mismatch_with_image_header_names_both_files(root: Path) -> None:
    _edit(root, "val", lambda d: d["images"][0].update(width=33))
    with pytest.raises(FormatError) as err:
        _read(root, ["val"])
    msg = str(err.value)
    assert "val.json:0:" in msg and "000101.png" in msg and "33x32" in msg and "32x32" in msg


def test_missing_image_is_an_error(root: Path) -> None:
    (root / "JPEGImages" / "val" / "000101.png").unlink()
    with pytest.raises(FormatError, match=r"000101\.png.*not found"):
        _read(root, ["val"])


def test_unknown_split_is_an_error(root: Path) -> None:
    with pytest.raises(FormatError, match="split 'test'"):
        _read(root, ["test"])
