"""The manifest suite's rules (babelrs_core/data/validation/rules.py), run through the stage: one
test per kind of bad manifest row, each naming the annotation file (and line) and the problem."""

from __future__ import annotations

import pandas as pd

from tests.data.validation.support import ROWS_ONLY, Data, failure, named


def _first_object(frame: pd.DataFrame, dataset: str) -> int:
    return int(frame.index[(frame["dataset"] == dataset) & (frame["object_index"] >= 0)][0])


def test_box_outside_the_image(data: Data) -> None:
    def move(f: pd.DataFrame) -> pd.DataFrame:
        i = _first_object(f, "dota")
        f.loc[i, "x2"] = f.loc[i, "width"] + 40
        return f

    data.edit(move)
    f = failure(data.fails(ROWS_ONLY), "box_inside_image.x2")
    named(f, "DOTA/train/labelTxt/Pt000.txt:3", "box outside the image", "x2=104")


def test_zero_area_box(data: Data) -> None:
    def flatten(f: pd.DataFrame) -> pd.DataFrame:
        i = _first_object(f, "sardet")
        f.loc[i, "y2"] = f.loc[i, "y1"]
        return f

    data.edit(flatten)
    f = failure(data.fails(ROWS_ONLY), "box_positive_area.y")
    named(f, "SARDet_100K/Annotations/train.json", "zero-area box")


def test_zero_area_polygon(data: Data) -> None:
    def collapse(f: pd.DataFrame) -> pd.DataFrame:
        i = _first_object(f, "dronevehicle")
        f.at[i, "poly"] = [5.0, 5.0] * 4
        return f

    data.edit(collapse)
    f = failure(data.fails(ROWS_ONLY), "polygon_area")
    named(f, "DroneVehicle/train/trainlabelr/00001.xml", "invalid polygon", "zero area")


def test_polygon_without_four_points(data: Data) -> None:
    def cut(f: pd.DataFrame) -> pd.DataFrame:
        i = _first_object(f, "dota")
        f.at[i, "poly"] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        return f

    data.edit(cut)
    f = failure(data.fails(ROWS_ONLY), "polygon_four_points")
    named(f, "Pt000.txt", "6 numbers instead of 8")


def test_unknown_class(data: Data) -> None:
    def rename(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[_first_object(f, "dota"), "class_name"] = "tank"  # a SAR class, not a DOTA one
        return f

    data.edit(rename)
    f = failure(data.fails(ROWS_ONLY), "class_in_label_space")
    named(f, "DOTA/train/labelTxt/Pt000.txt", "unknown class 'tank'", "not a dota class")


def test_wrong_modality_value(data: Data) -> None:
    def relabel(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[f["dataset"] == "sardet", "modality"] = "optical"
        return f

    data.edit(relabel)
    f = failure(data.fails(ROWS_ONLY), "modality_known")
    named(f, "SARDet_100K/Annotations", "modality 'optical' is not one of: sar, rgb, ir")
    assert f.count == 4


def test_modality_that_does_not_fit_the_dataset(data: Data) -> None:
    def relabel(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[f["dataset"] == "dota", "modality"] = "sar"
        return f

    data.edit(relabel)
    f = failure(data.fails(ROWS_ONLY), "modality_for_dataset")
    named(f, "DOTA/", "modality 'sar' does not fit dataset dota")


def test_duplicate_id(data: Data) -> None:
    data.edit(lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True))
    f = failure(data.fails(ROWS_ONLY), "unique_id")
    example = named(f, "duplicate id", "appears more than once")
    assert "DOTA/train/labelTxt/Pt000.txt" in example
    assert f.count == 2  # both copies are listed


def test_one_id_for_two_images(data: Data) -> None:
    def clash(f: pd.DataFrame) -> pd.DataFrame:
        a = f.index[f["image_id"] == "dota/train/Pt000"]
        f.loc[f["image_id"] == "dota/train/Pt001", "object_index"] += 10
        f.loc[f["image_id"] == "dota/train/Pt001", "image_id"] = "dota/train/Pt000"
        assert len(a)
        return f

    data.edit(clash)
    f = failure(data.fails(ROWS_ONLY), "one_image_per_id")
    named(f, "duplicate id", "used by 2 different images")


def test_null_where_forbidden(data: Data) -> None:
    def blank(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[_first_object(f, "dota"), "class_name"] = None
        return f

    data.edit(blank)
    f = failure(data.fails(ROWS_ONLY), "object_not_null.class_name")
    named(f, "Pt000.txt", "class_name is empty")


def test_empty_split(data: Data) -> None:
    data.edit(lambda f: f[~((f["dataset"] == "dronevehicle") & (f["split"] == "val"))])
    report = data.fails(ROWS_ONLY)
    f = failure(report, "split_not_empty")
    named(f, str(data.manifest), "empty split: dronevehicle split 'val' has no images")


def test_split_without_objects(data: Data) -> None:
    def strip(f: pd.DataFrame) -> pd.DataFrame:
        val = (f["dataset"] == "sardet") & (f["split"] == "val")
        for col in ("class_name", "raw_class", "x1", "y1", "x2", "y2", "poly"):
            f.loc[val, col] = None
        f.loc[val, ["object_index", "label"]] = -1
        return f

    data.edit(strip)
    f = failure(data.fails(ROWS_ONLY), "split_has_objects")
    named(f, "sardet split 'val' has no objects")


def test_class_missing_from_train(data: Data) -> None:
    data.edit(
        lambda f: f[
            ~((f["dataset"] == "dota") & (f["class_name"] == "ship") & (f["split"] == "train"))
        ]
    )
    f = failure(data.fails(ROWS_ONLY), "train_classes")
    named(f, "dota class 'ship' has no object in the train split")
