"""The format check over raw dataset folders (babelrs_core/data/validation/raw.py): every
malformed annotation file is listed as ``file:line``, the good files are still read and checked."""

from __future__ import annotations

from babelrs_core.data.validation.raw import FORMAT_CHECK
from tests.data.validation.support import Data, failure, named


def test_malformed_dota_line(data: Data) -> None:
    label = data.roots["dota"] / "train/labelTxt/Pt001.txt"
    label.write_text(label.read_text() + "10 20 30 40 plane 0\n")
    report = data.fails(raw=True)
    f = failure(report, FORMAT_CHECK)
    example = named(f, "DOTA/train/labelTxt/Pt001.txt:4")
    assert f.count == 1, example
    assert report.images == 8  # the other files were still read and checked


def test_malformed_dronevehicle_xml(data: Data) -> None:
    label = data.roots["dronevehicle"] / "train/trainlabelr/00002.xml"
    label.write_text(label.read_text().replace("</polygon>", "", 1))
    f = failure(data.fails(raw=True), FORMAT_CHECK)
    named(f, "DroneVehicle/train/trainlabelr/00002.xml:")


def test_malformed_coco_json(data: Data) -> None:
    ann = data.roots["sardet"] / "Annotations/val.json"
    ann.write_text(ann.read_text()[:-10])
    f = failure(data.fails(raw=True), FORMAT_CHECK)
    named(f, "SARDet_100K/Annotations/val.json:1", "invalid JSON")


def test_unknown_class_in_a_raw_file(data: Data) -> None:
    label = data.roots["dota"] / "val/labelTxt/Pv000.txt"
    label.write_text(label.read_text().replace(" ship ", " container-crane "))
    f = failure(data.fails(raw=True), FORMAT_CHECK)
    named(f, "Pv000.txt:3", "container-crane")


def test_several_broken_files_are_all_listed(data: Data) -> None:
    for name in ("Pt000.txt", "Pt001.txt"):
        label = data.roots["dota"] / "train/labelTxt" / name
        label.write_text(label.read_text() + "1 2 3\n")
    (data.roots["sardet"] / "Annotations/train.json").write_text("{")
    f = failure(data.fails(raw=True), FORMAT_CHECK)
    assert f.count == 3
    for part in ("Pt000.txt", "Pt001.txt", "train.json"):
        named(f, part)
