"""DOTA v1.0 reader: every quirk of docs/soi_mini.md §5.2 (headers, gsd null, floats, SOI-Det
spellings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.concepts import soi_label
from babelrs_core.config import Importers
from babelrs_core.data.formats import dota
from babelrs_core.data.formats.errors import (
    TOO_SMALL,
    UNLABELLED_SPLIT,
    ZERO_AREA,
    FormatError,
)
from tests.data.formats.reading import read_all
from tests.fixtures import make_fixtures

PARAMS = Importers()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_fixtures.materialize("dota", tmp_path)


def _read(root: Path, splits=None, drops=None):
    return read_all(dota.read, root, PARAMS, splits, drops)


def _image(root: Path, stem: str, split: str = "train"):
    return [r for r in _read(root, [split]) if r.image_id == f"dota/{split}/{stem}"]


def _label(root: Path, stem: str, text: str) -> Path:
    path = root / "train" / "labelTxt" / f"{stem}.txt"
    path.write_text(text)
    return path


def test_discovers_labelled_splits_and_reports_the_unlabelled_test_split(root: Path) -> None:
    drops = []
    rows = _read(root, drops=drops)
    assert {r.split for r in rows} == {"train", "val"}
    assert [(d.split, d.reason) for d in drops if d.reason == UNLABELLED_SPLIT] == [
        ("test", UNLABELLED_SPLIT)
    ]
    assert all(r.modality == "rgb" and Path(r.path).is_absolute() for r in rows)


def test_file_with_header_lines(root: Path) -> None:
    rows = _image(root, "P0000")
    assert [r.class_name for r in rows] == ["plane", "large-vehicle", "small-vehicle"]
    assert [r.source_line for r in rows] == [3, 4, 5]  # 1-based lines, headers counted
    assert (rows[0].width, rows[0].height) == (96, 96)  # from the image header


def test_header_is_parsed(root: Path) -> None:
    header, objects = dota.parse_label_file(root / "train" / "labelTxt" / "P0000.txt")
    assert header == {"imagesource": "GoogleEarth", "gsd": pytest.approx(0.139152881468)}
    assert len(objects) == 3


def test_file_without_header_lines(root: Path) -> None:
    header, _ = dota.parse_label_file(root / "train" / "labelTxt" / "P0001.txt")
    assert header == {}
    assert [r.class_name for r in _image(root, "P0001")] == ["ship", "storage-tank"]


@pytest.mark.parametrize(("stem", "raw"), [("P0002", "null"), ("P0004", "None")])
def test_gsd_null_or_none(root: Path, stem: str, raw: str) -> None:
    text = (root / "train" / "labelTxt" / f"{stem}.txt").read_text()
    assert f"gsd:{raw}" in text
    header, _ = dota.parse_label_file(root / "train" / "labelTxt" / f"{stem}.txt")
    assert header["gsd"] is None


def test_invalid_gsd_is_an_error(root: Path) -> None:
    path = _label(root, "P0003", "imagesource:GoogleEarth\ngsd:fine\n")
    with pytest.raises(FormatError, match=r"P0003\.txt:2: gsd must be a number or null"):
        dota.parse_label_file(path)


def test_float_coordinates(root: Path) -> None:
    ship = _image(root, "P0001")[0]
    assert ship.poly == [10.5, 20.0, 30.0, 12.5, 34.0, 22.0, 14.5, 29.5]
    assert (ship.x1, ship.y1, ship.x2, ship.y2) == (10.5, 12.5, 34.0, 29.5)


def test_v15_style_float_coordinates_like_1069_0(root: Path) -> None:
    _label(root, "P0003", "10.0 10.0 60.0 10.0 60.0 40.0 10.0 40.0 plane 0\n")
    assert _image(root, "P0003")[0].poly == [10.0, 10.0, 60.0, 10.0, 60.0, 40.0, 10.0, 40.0]


def test_difficult_flag_is_parsed(root: Path) -> None:
    assert [r.difficult for r in _image(root, "P0000")] == [False, False, True]
    assert _image(root, "P0001")[0].difficult is True


def test_difficult_other_than_0_or_1_is_an_error(root: Path) -> None:
    path = _label(root, "P0003", "\n10 10 60 10 60 40 10 40 plane 2\n")
    with pytest.raises(FormatError) as err:
        _read(root, ["train"])
    assert str(err.value) == f"{path}:2: difficult must be 0 or 1, got '2'"


def test_soi_det_capitalised_names_map_to_dota_classes(root: Path) -> None:
    rows = _image(root, "P0002")
    assert [(r.raw_class, r.class_name) for r in rows] == [
        ("Ship", "ship"),
        ("Harbor", "harbor"),
        ("Bridge", "bridge"),
        ("tennis-court", "tennis-court"),
    ]
    assert [r.label for r in rows[:3]] == [
        soi_label("dota", c) for c in ("ship", "harbor", "bridge")
    ]
    assert rows[0].label == 9  # 'Ship' in the 26-class union, not SAR's 'ship' (0)


def test_soi_det_annfiles_folder_is_accepted(root: Path) -> None:
    rows = _read(root, ["val"])
    assert [r.class_name for r in rows] == ["harbor"]
    assert rows[0].source_file == "DOTA/val/annfiles/P0100.txt"


def test_clockwise_vertex_order_is_kept(root: Path) -> None:
    # written head-first from the bottom-right corner, clockwise: must not be re-ordered
    lv = _image(root, "P0000")[1]
    assert lv.poly == [50.0, 40.0, 30.0, 40.0, 30.0, 20.0, 50.0, 20.0]
    assert (lv.x1, lv.y1, lv.x2, lv.y2) == (30.0, 20.0, 50.0, 40.0)


def test_box_is_clipped_but_polygon_kept(root: Path) -> None:
    tank = _image(root, "P0001")[1]
    assert tank.poly == [80.0, 80.0, 100.0, 80.0, 100.0, 100.0, 80.0, 100.0]
    assert (tank.x1, tank.y1, tank.x2, tank.y2) == (80.0, 80.0, 96.0, 96.0)


def test_blank_lines_are_ignored(root: Path) -> None:
    assert "\n\n" in (root / "train" / "labelTxt" / "P0001.txt").read_text()
    assert [r.source_line for r in _image(root, "P0001")] == [1, 3]


def test_empty_label_file_is_an_image_without_objects(root: Path) -> None:
    rows = _image(root, "P0003")
    assert len(rows) == 1 and rows[0].object_index == -1 and rows[0].class_name is None


def test_degenerate_polygons_are_dropped_and_reported(root: Path) -> None:
    drops = []
    _read(root, ["train"], drops)
    assert [(d.file, d.line, d.reason) for d in drops] == [
        ("DOTA/train/labelTxt/P0004.txt", 3, ZERO_AREA),
        ("DOTA/train/labelTxt/P0004.txt", 4, TOO_SMALL),
    ]
    assert [r.object_index for r in _image(root, "P0004")] == [-1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("10 10 60 10 60 40 10 40 plane", "expected 10 fields"),
        ("10 10 60 10 60 40 10 40 plane 0 extra", "expected 10 fields"),
        ("10 10 60 ten 60 40 10 40 plane 0", "coordinate y2 is not a number: 'ten'"),
        ("10 10 60 10 60 40 10 nan plane 0", "coordinate y4 is not a number"),
        ("10 10 60 10 60 40 10 40 container-crane 0", "'container-crane' is not a dota class"),
    ],
)
def test_bad_line_is_an_error_with_file_and_line(root: Path, line: str, message: str) -> None:
    path = _label(root, "P0003", f"imagesource:GoogleEarth\ngsd:0.2\n{line}\n")
    with pytest.raises(FormatError) as err:
        _read(root, ["train"])
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_unknown_class_error_lists_allowed_names(root: Path) -> None:
    _label(root, "P0003", "10 10 60 10 60 40 10 40 container-crane 0\n")
    with pytest.raises(FormatError, match="allowed: small-vehicle, large-vehicle, plane"):
        _read(root, ["train"])


def test_label_file_without_image_is_an_error(root: Path) -> None:
    _label(root, "P0999", "")
    with pytest.raises(FormatError, match=r"P0999\.txt: label file without image"):
        _read(root, ["train"])


def test_image_without_label_file_is_an_error(root: Path) -> None:
    (root / "train" / "labelTxt" / "P0003.txt").unlink()
    with pytest.raises(FormatError, match=r"P0003\.png: image without label file"):
        _read(root, ["train"])


def test_explicit_unlabelled_split_is_an_error(root: Path) -> None:
    with pytest.raises(FormatError, match="split 'test': no labelTxt or annfiles folder"):
        _read(root, ["test"])


def test_unreadable_image_is_an_error_naming_both_files(root: Path) -> None:
    (root / "train" / "images" / "P0003.png").write_bytes(b"not a png")
    with pytest.raises(
        FormatError, match=r"P0003\.png: not a readable image \(referenced by .*P0003\.txt"
    ):
        _read(root, ["train"])
