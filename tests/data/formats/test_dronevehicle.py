"""DroneVehicle reader: every quirk of docs/soi_mini.md §5.3 (border, bndbox, typos, ``*``,
stems)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from babelrs_core.config import Importers
from babelrs_core.data.formats import dronevehicle
from babelrs_core.data.formats.errors import (
    IGNORED_CLASS,
    IN_BORDER,
    FormatError,
)
from tests.data.formats.reading import read_all
from tests.fixtures import make_fixtures

IR = Importers()  # default: infrared only, 100-px border


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_fixtures.materialize("dronevehicle", tmp_path)


def _read(root: Path, params: Importers = IR, splits=None, drops=None):
    return read_all(dronevehicle.read, root, params, splits, drops)


def _image(rows, image_id: str):
    return [r for r in rows if r.image_id == image_id]


def test_fixture_images_have_the_real_size_and_white_border(root: Path) -> None:
    with Image.open(root / "train" / "trainimgr" / "00001.jpg") as im:
        assert im.size == (840, 712)
        assert im.convert("L").getpixel((50, 50)) > 250
        assert im.convert("L").getpixel((420, 356)) < 200


def test_infrared_only_by_default(root: Path) -> None:
    rows = _read(root)
    assert {r.modality for r in rows} == {"ir"} and {r.dataset for r in rows} == {"dronevehicle"}
    assert {r.split for r in rows} == {"train", "val"}
    assert all("imgr" in Path(r.path).parent.name for r in rows)


def test_border_crop_size(root: Path) -> None:
    for r in _read(root):
        assert (r.width, r.height) == (640, 512)
        assert (r.crop_x, r.crop_y) == (100, 100)


def test_border_crop_coordinates(root: Path) -> None:
    car = _image(_read(root), "dronevehicle/train/00001")[0]
    # the real example polygon of docs/soi_mini.md §5.3 (574 395 604 393 606 469 578 466) minus
    # the 100-px border
    assert car.poly == [474.0, 295.0, 504.0, 293.0, 506.0, 369.0, 478.0, 366.0]
    assert (car.x1, car.y1, car.x2, car.y2) == (474.0, 293.0, 506.0, 369.0)


def test_border_param_zero_keeps_the_file_frame(root: Path) -> None:
    car = _image(_read(root, Importers(dronevehicle_border_px=0)), "dronevehicle/train/00001")[0]
    assert (car.width, car.height, car.crop_x, car.crop_y) == (840, 712, 0, 0)
    assert car.poly[:2] == [574.0, 395.0]


def test_object_partly_in_the_border_is_clipped(root: Path) -> None:
    rows = _image(_read(root), "dronevehicle/train/00002")
    freight = next(r for r in rows if r.raw_class == "feright_car")
    # x 80..130 in the file -> -20..30 after the crop -> clipped to 0..30
    assert freight.poly == [0.0, 200.0, 30.0, 200.0, 30.0, 230.0, 0.0, 230.0]
    assert (freight.x1, freight.x2) == (0.0, 30.0)


def test_object_wholly_in_the_border_is_dropped_and_reported(root: Path) -> None:
    drops = []
    rows = _read(root, drops=drops)
    border = [d for d in drops if d.reason == IN_BORDER]
    assert len(border) == 1
    assert (border[0].file, border[0].raw_class) == (
        "DroneVehicle/train/trainlabelr/00002.xml",
        "van",
    )
    assert not any(r.raw_class == "van" for r in rows)


def test_bndbox_fallback_becomes_a_polygon(root: Path) -> None:
    rows = _image(_read(root), "dronevehicle/train/00001")
    truck = next(r for r in rows if r.raw_class == "truvk")
    # <bndbox> 300 300 380 330 -> clockwise polygon from the top-left, minus the border
    assert truck.poly == [200.0, 200.0, 280.0, 200.0, 280.0, 230.0, 200.0, 230.0]
    assert (truck.x1, truck.y1, truck.x2, truck.y2) == (200.0, 200.0, 280.0, 230.0)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("feright car", "freight car"),
        ("feright_car", "freight car"),
        ("feright", "freight car"),
        ("FERIGHT_CAR", "freight car"),
        ("truvk", "truck"),
        ("Truck", "truck"),
    ],
)
def test_class_typos_and_case_are_normalised(root: Path, raw: str, canonical: str) -> None:
    rows = _read(root, Importers(dronevehicle_modalities=["ir", "rgb"]))
    found = [r for r in rows if r.raw_class == raw]
    assert found, f"fixture lacks {raw!r}"
    assert {r.class_name for r in found} == {canonical}


def test_star_objects_are_dropped_and_reported(root: Path) -> None:
    drops = []
    rows = _read(root, drops=drops)
    stars = [d for d in drops if d.reason == IGNORED_CLASS]
    assert [(d.file, d.line, d.raw_class) for d in stars] == [
        ("DroneVehicle/train/trainlabelr/00002.xml", 22, "*"),
        ("DroneVehicle/train/trainlabelr/00003.xml", 10, "*"),
    ]
    assert not any(r.raw_class == "*" for r in rows)
    # an image whose only object is '*' is kept as an image without objects
    assert [r.object_index for r in _image(rows, "dronevehicle/train/00003")] == [-1]


def test_pairing_is_by_file_stem_not_by_filename_element(root: Path) -> None:
    xml = (root / "train" / "trainlabelr" / "00001.xml").read_text()
    assert "<filename>DJI_0458</filename>" in xml
    rows = _image(_read(root), "dronevehicle/train/00001")
    assert Path(rows[0].path).name == "00001.jpg"
    assert rows[0].source_file == "DroneVehicle/train/trainlabelr/00001.xml"


def test_rgb_modality_has_its_own_labels_and_image_ids(root: Path) -> None:
    rows = _read(root, Importers(dronevehicle_modalities=["ir", "rgb"]))
    rgb = [r for r in rows if r.modality == "rgb"]
    assert {r.image_id for r in rgb} == {"dronevehicle/train/00001_rgb"}
    assert {r.dataset for r in rgb} == {"dronevehicle"}
    assert Path(rgb[0].path).parent.name == "trainimg"
    assert [r.raw_class for r in rgb] == ["car", "feright"]  # RGB labels differ from IR ones
    ids = [r.image_id for r in rows if r.object_index <= 0]
    assert len(ids) == len(set(ids))


def test_source_line_is_the_object_ordinal(root: Path) -> None:
    rows = _image(_read(root), "dronevehicle/train/00002")
    assert [(r.raw_class, r.source_line) for r in rows] == [("car", 1), ("feright_car", 3)]


def test_difficult_flag_is_read(root: Path) -> None:
    rows = _image(_read(root), "dronevehicle/train/00001")
    assert [r.difficult for r in rows] == [False, True, False]


def test_malformed_xml_is_an_error_with_the_parser_line(root: Path) -> None:
    path = root / "train" / "trainlabelr" / "00002.xml"
    lines = path.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if "<name>" in line)
    lines[i] = lines[i].replace("</name>", "</nam>")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as err:
        _read(root)
    assert err.value.path == path and err.value.line == i + 1
    assert str(err.value).startswith(f"{path}:{i + 1}: malformed XML: mismatched tag")


def test_empty_xml_file_is_an_error(root: Path) -> None:
    path = root / "train" / "trainlabelr" / "00003.xml"
    path.write_text("")
    with pytest.raises(FormatError, match=r"00003\.xml:1: malformed XML"):
        _read(root)


def test_object_without_polygon_or_bndbox_is_an_error(root: Path) -> None:
    path = root / "val" / "vallabelr" / "00001.xml"
    text = path.read_text()
    start, end = text.index("<polygon>"), text.index("</polygon>") + len("</polygon>")
    path.write_text(text[:start] + text[end:])
    with pytest.raises(FormatError, match=r"00001\.xml:10: object #1 has neither"):
        _read(root)


def test_non_numeric_coordinate_is_an_error(root: Path) -> None:
    path = root / "val" / "vallabelr" / "00001.xml"
    path.write_text(path.read_text().replace("<x2>360</x2>", "<x2>36O</x2>"))
    with pytest.raises(FormatError, match=r"00001\.xml:18: object #1: <x2> is not a number"):
        _read(root)


def test_unknown_class_is_an_error_listing_allowed_names(root: Path) -> None:
    path = root / "val" / "vallabelr" / "00001.xml"
    path.write_text(path.read_text().replace("<name>bus</name>", "<name>tractor</name>"))
    with pytest.raises(FormatError) as err:
        _read(root)
    assert "object #3: class 'tractor' is not a dronevehicle class" in str(err.value)
    assert "car, bus, freight car, truck, van" in str(err.value)


def test_size_mismatch_names_both_files(root: Path) -> None:
    Image.new("RGB", (800, 712), "white").save(root / "val" / "valimgr" / "00001.jpg")
    with pytest.raises(FormatError) as err:
        _read(root)
    msg = str(err.value)
    assert (
        "vallabelr/00001.xml:4: <size> says 840x712" in msg
        and "valimgr/00001.jpg is 800x712" in msg
    )


def test_label_without_image_is_an_error(root: Path) -> None:
    (root / "val" / "valimgr" / "00001.jpg").unlink()
    with pytest.raises(FormatError, match="label file without image"):
        _read(root)


def test_missing_modality_folder_is_an_error(root: Path) -> None:
    with pytest.raises(FormatError, match=r"valimg: split 'val' \(rgb\): folder not found"):
        _read(root, Importers(dronevehicle_modalities=["rgb"]), ["val"])
