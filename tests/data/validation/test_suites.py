"""The Great Expectations runner (babelrs_core/data/validation/suites.py): GX flags exactly what
the pandas reference flags, and its checkpoints render the Data Docs site."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from babelrs_core.data.manifest import read_manifest
from babelrs_core.data.validation.stage import validate_frame
from tests.data import fake_data
from tests.data.validation.support import Data


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
