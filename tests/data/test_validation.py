"""The validation stage: GX suites over the manifest + image checks + raw format checks.

Every kind of bad input has its own test: the stage must raise ``DataValidationError`` and the
report must name the offending file and say what is wrong with it. The fake data (valid to begin
with) comes from ``fake_data.py``; each test breaks one thing in its own copy.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from babelrs_core import stages
from babelrs_core.cli import app
from babelrs_core.config import Params
from babelrs_core.data.manifest import read_manifest, write_manifest
from babelrs_core.data.validation import (
    FORMAT_CHECK,
    DataValidationError,
    ValidationReport,
    inspect_image,
    run_validation,
    validate_frame,
)
from tests.data import fake_data


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One valid fake dataset (raw + manifest) per module; tests work on copies."""
    base = tmp_path_factory.mktemp("pristine")
    fake_data.make_dataset(base)
    return base


class Data:
    """A private copy of the fake dataset."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw = root / "raw"
        self.manifest = root / "manifest" / "fake.parquet"
        self.out = root / "out"
        self.roots = {
            "sardet": self.raw / "SARDet_100K",
            "dota": self.raw / "DOTA",
            "dronevehicle": self.raw / "DroneVehicle",
        }

    def edit(self, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        """Rewrite the manifest through ``fn`` (absolute paths in, relative paths out)."""
        write_manifest(fn(read_manifest(self.manifest)), self.manifest)

    def validate(self, params: Params | None = None, raw: bool = False) -> ValidationReport:
        return run_validation(
            params or fake_data.params(),
            manifest=self.manifest,
            out_dir=self.out,
            raw_roots=self.roots if raw else None,
        )

    def fails(self, params: Params | None = None, raw: bool = False) -> ValidationReport:
        with pytest.raises(DataValidationError) as info:
            self.validate(params, raw)
        return info.value.report


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Data:
    shutil.copytree(pristine, tmp_path / "d")
    return Data(tmp_path / "d")


#: For tests of manifest rules: the image suite has its own tests (and decoding costs time).
ROWS_ONLY = fake_data.params(validation={"image_checks": False})


def failure(report: ValidationReport, check: str):
    """The failure of ``check`` (exact id or id prefix); a helpful error when absent."""
    found = [f for f in report.failures if f.check == check or f.check.startswith(check + ".")]
    assert found, f"{check} did not fail; failures: {[f.check for f in report.failures]}"
    return found[0]


def named(failure_, *words: str) -> str:
    """The first example that contains every word (file names, values); fails otherwise."""
    for example in failure_.examples:
        if all(w in example for w in words):
            return example
    raise AssertionError(f"no example of {failure_.check} mentions {words}: {failure_.examples}")


# ------------------------------------------------------------------------------ clean data


def test_clean_manifest_passes_and_writes_reports(data: Data) -> None:
    report = data.validate()
    assert report.passed and not report.failures
    assert (report.rows, report.images, report.objects) == (12, 9, 12)
    assert report.checks >= 40
    summary = json.loads((data.out / "summary.json").read_text())
    assert summary == report.summary() and summary["passed"] is True
    assert json.loads((data.out / "report.json").read_text())["failed_checks"] == 0
    assert "PASSED" in (data.out / "report.md").read_text()
    data.validate()
    assert json.loads((data.out / "summary.json").read_text()) == summary  # deterministic metric


def test_clean_raw_folders_pass(data: Data) -> None:
    report = data.validate(raw=True)
    assert report.passed
    assert report.images == 9


# ------------------------------------------------------------------- bad images (one each)


def test_truncated_image(data: Data) -> None:
    image = data.roots["dota"] / "train/images/Pt000.png"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    f = failure(data.fails(), "image_decodes")
    assert "truncated" in named(f, "Pt000.png", "does not decode")


def test_missing_image_file(data: Data) -> None:
    image = data.roots["sardet"] / "JPEGImages/train/t00001.png"
    image.unlink()
    f = failure(data.fails(), "image_exists")
    named(f, "t00001.png", "missing image")
    assert f.count == 1


def test_wrong_channel_count(data: Data) -> None:
    image = data.roots["dota"] / "train/images/Pt001.png"
    fake_data.noise_image(image, fake_data.SIZES["dota"], "RGBA", seed=5)
    f = failure(data.fails(), "image_channels")
    named(f, "Pt001.png", "wrong channel count: 4", "rgb images must have 3")


def test_constant_image(data: Data) -> None:
    image = data.roots["sardet"] / "JPEGImages/val/v00000.png"
    Image.new("L", fake_data.SIZES["sardet"], 128).save(image)
    f = failure(data.fails(), "image_not_constant")
    named(f, "v00000.png", "constant image")


def test_decoded_size_differs_from_manifest(data: Data) -> None:
    image = data.roots["dota"] / "val/images/Pv000.png"
    fake_data.noise_image(image, (70, 64), "RGB", seed=3)
    f = failure(data.fails(), "image_size_matches.width")
    named(f, "Pv000.png", "decoded size 70x64", "64x64")


def test_wrong_dtype(data: Data) -> None:
    image = data.roots["sardet"] / "JPEGImages/train/t00000.png"
    arr = np.random.default_rng(0).integers(0, 60000, (48, 64), dtype=np.uint16)
    Image.fromarray(arr).save(image)  # 16-bit grayscale PNG
    f = failure(data.fails(), "image_dtype")
    named(f, "t00000.png", "uint16", "sar images must be uint8")


def test_image_checks_can_be_switched_off(data: Data) -> None:
    (data.roots["sardet"] / "JPEGImages/train/t00001.png").unlink()
    report = data.validate(fake_data.params(validation={"image_checks": False}))
    assert report.passed


# --------------------------------------------------------------- bad manifest rows (one each)


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


def test_train_classes_from_soi_mini_params(data: Data) -> None:
    params = fake_data.params(validation={"train_classes": "soi_mini"})
    f = failure(data.fails(params), "train_classes")
    named(f, "dota class 'harbor' has no object in the train split")  # in soi_mini.dota.classes


# ---------------------------------------------------------- malformed raw files (one each)


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


# ------------------------------------------------------------------------ report and engines


def test_examples_are_capped_but_counted(data: Data) -> None:
    data.edit(lambda f: f.assign(modality="optical"))
    params = fake_data.params(validation={"max_examples": 2})
    f = failure(data.fails(params), "modality_known")
    assert f.count == 12 and len(f.examples) == 2
    md = (data.out / "report.md").read_text()
    assert "FAILED modality_known" in md and "12 offending row(s)/file(s), first 2 listed" in md
    assert json.loads((data.out / "summary.json").read_text())["passed"] is False


def test_gx_and_pandas_agree(data: Data) -> None:
    """The pandas reference (used by the benchmark) flags exactly what GX flags."""

    def break_many(f: pd.DataFrame) -> pd.DataFrame:
        f = pd.concat([f, f.iloc[[0, 1]]], ignore_index=True)
        f.loc[2, "x2"] = 1000.0
        f.loc[3, "modality"] = "optical"
        f.loc[4, "class_name"] = "tank"
        f.loc[5, "y2"] = f.loc[5, "y1"]
        f.at[6, "poly"] = [0.0] * 8
        f.loc[7, "label"] = 3
        return f

    data.edit(break_many)
    (data.roots["dota"] / "val/images/Pv000.png").unlink()
    frame = read_manifest(data.manifest)
    cfg = fake_data.params().validation
    gx = validate_frame(frame, cfg, engine="gx")
    pd_ = validate_frame(frame, cfg, engine="pandas")
    assert {f.check: f.count for f in gx.failures} == {f.check: f.count for f in pd_.failures}
    assert {f.check: f.examples for f in gx.failures} == {f.check: f.examples for f in pd_.failures}
    assert len(gx.failures) >= 8


def test_data_docs_are_written(data: Data) -> None:
    params = fake_data.params(
        validation={"data_docs": True, "data_docs_dir": str(data.out / "data_docs")}
    )
    data.edit(lambda f: f.assign(split="train"))
    report = data.fails(params)
    index = data.out / "data_docs" / "index.html"
    assert report.data_docs == str(index) and index.is_file()
    pages = list((data.out / "data_docs" / "validations").rglob("*.html"))
    assert {p.parent.parent.parent.name for p in pages} == {"manifest", "images"}
    html = "".join(p.read_text() for p in pages)
    assert "dronevehicle/val" in html  # the missing split, as GX renders the failure


def _page_text(path: Path) -> str:
    """The visible text of an HTML page (scripts, styles and tags dropped, spaces collapsed)."""
    page = re.sub(r"<(script|style).*?</\1>", " ", path.read_text(), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_data_docs_come_from_the_checkpoints_and_show_the_failure(data: Data) -> None:
    """Each suite runs through a GX Checkpoint whose UpdateDataDocsAction renders its result into
    the local site: index.html links one page per suite; a broken row shows up as a failed
    expectation there, and a rerun replaces the old pages."""
    docs = data.out / "data_docs"
    params = fake_data.params(validation={"data_docs": True, "data_docs_dir": str(docs)})

    def pages() -> dict[str, Path]:
        found = list((docs / "validations").rglob("*.html"))
        assert len(found) == 2, found  # one validation result page per suite, this run only
        return {p.relative_to(docs / "validations").parts[0]: p for p in found}

    assert data.validate(params).data_docs == str(docs / "index.html")
    index = (docs / "index.html").read_text()
    for suite, page in pages().items():
        assert page.relative_to(docs).as_posix() in index  # linked from the site's index
        text = _page_text(page)
        assert f"Expectation Suite: {suite}" in text and "Status: Succeeded" in text
        assert "Run Name babelrs-validate" in text

    data.edit(lambda f: f.assign(x2=f["x2"].where(f.index != 3, 1000.0)))
    report = data.fails(params)
    assert [f.check for f in report.failures] == ["box_inside_image.x2"]
    found = pages()
    assert set(found) == {"manifest", "images"}
    manifest, images = _page_text(found["manifest"]), _page_text(found["images"])
    assert "Expectation Suite: manifest" in manifest and "Status: Failed" in manifest
    assert "greater than or equal to those in x2 . 1 unexpected values found" in manifest
    assert "Status: Succeeded" in images
    assert "Failed" in (docs / "index.html").read_text()


def test_inspect_image_never_raises(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image")
    facts = inspect_image(str(tmp_path / "junk.png"), 0, 0, 4, 4)
    assert facts["exists"] and facts["decodes"] is False and facts["error"]
    assert inspect_image(str(tmp_path / "nope.png"), 0, 0, 4, 4)["exists"] is False


# ------------------------------------------------------------------------- stage and CLI


def test_stage_raises_before_anything_downstream(data: Data) -> None:
    (data.roots["dota"] / "train/images/Pt000.png").unlink()
    with pytest.raises(DataValidationError, match="image_exists"):
        stages.validate(fake_data.params(), data.manifest, data.out, progress=False)


def test_cli_exit_codes_and_messages(data: Data, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(fake_data.PARAMS))  # JSON is YAML
    runner = CliRunner()
    args = ["data", "validate", "-p", str(params), "--manifest", str(data.manifest), "-q"]
    ok = runner.invoke(app, [*args, "--out", str(data.out)])
    assert ok.exit_code == 0, ok.output
    assert "data validation passed" in ok.output

    (data.roots["dronevehicle"] / "val/valimgr/00001.jpg").unlink()
    bad = runner.invoke(app, [*args, "--out", str(data.out)])
    assert bad.exit_code == 1
    assert "valimgr/00001.jpg" in bad.output and "missing image" in bad.output

    label = data.roots["dota"] / "train/labelTxt/Pt000.txt"
    label.write_text("x y z\n")
    raw = runner.invoke(app, [*args, "--raw", str(data.raw), "--out", str(data.out)])
    assert raw.exit_code == 1
    assert "DOTA/train/labelTxt/Pt000.txt:1" in raw.output
