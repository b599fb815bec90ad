"""The generated "Detector fine-tuning" section of docs/results.md and its tables."""

from __future__ import annotations

from pathlib import Path

from babelrs_core.evaluation.results_section import SECTION, results_section, results_table
from babelrs_core.io.results_md import update_results_md


def _eval(h: float) -> dict:
    ds = {"ap50": 50.0, "map": 20.0, "classes_scored": 2, "images": 3, "objects": 4,
          "detections": 5}  # fmt: skip
    return {"overall": {"ap50": 50.0, "map": 20.0, "hmap": h, "classes_scored": 6},
            "sardet": ds, "dota": ds, "dronevehicle": ds}  # fmt: skip


def test_table_has_one_row_per_run_and_the_paper_row() -> None:
    table = results_table([{"label": "csia", "eval": _eval(21.5)},
                           {"label": "imagenet", "eval": _eval(19.25)}])  # fmt: skip
    lines = table.splitlines()
    assert lines[0].startswith("| run | SAR AP@50 | SAR mAP | DOTA AP@50")
    assert lines[0].rstrip().endswith("| Overall AP@50 | Overall mAP | H-mAP |")
    assert "| csia |" in table and "**21.50**" in table and "**19.25**" in table
    assert "| 91.70 | 63.30 |" in table and "53.02" in lines[-1]


def test_update_touches_only_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n## Pretraining\n\ntheirs\n\n## Other\n\nkeep\n")
    section = results_section([{"label": "csia", "eval": _eval(21.5), "train": {}, "info": {}}])
    update_results_md(doc, section, SECTION)
    text = doc.read_text()
    assert "## Pretraining\n\ntheirs\n" in text and "## Other\n\nkeep\n" in text
    assert text.count(SECTION) == 1
    # regenerate with new numbers in place: still one section, others untouched
    update_results_md(doc, results_section([{"label": "x", "eval": _eval(7.0)}]), SECTION)
    text2 = doc.read_text()
    assert text2.count(SECTION) == 1 and "**7.00**" in text2 and "**21.50**" not in text2
    assert text2.index("## Pretraining") < text2.index(SECTION)
    assert "## Other\n\nkeep\n" in text2


def test_section_is_inserted_before_later_sections_when_present(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\n{SECTION}\n\nold\n\n## Pretraining\n\ntheirs\n")
    update_results_md(doc, results_section([{"label": "csia", "eval": _eval(1.0)}]), SECTION)
    text = doc.read_text()
    assert "old" not in text and text.endswith("## Pretraining\n\ntheirs\n")
    new = tmp_path / "new.md"
    update_results_md(new, results_section([{"label": "csia", "eval": _eval(1.0)}]), SECTION)
    assert new.read_text().startswith("# Results\n\n" + SECTION)


def test_oriented_runs_get_a_rotated_row_and_an_all_horizontal_row() -> None:
    e = _eval(21.5)
    e["dota"] = {**e["dota"], "map": 12.0, "hbox_ap50": 55.0, "hbox_map": 25.0}
    e["dronevehicle"] = {**e["dronevehicle"], "hbox_ap50": 60.0, "hbox_map": 30.0}
    e["overall"] = {**e["overall"], "hbox_ap50": 52.0, "hbox_map": 24.0, "hbox_hmap": 23.5}
    lines = results_table([{"label": "csia", "eval": e}]).splitlines()
    row = "| csia (DOTA / DroneVehicle rotated) | 50.00 | 20.00 | 50.00 | 12.00"
    assert lines[2].startswith(row)
    assert lines[2].endswith("| **21.50** |")
    # the same run, horizontal everywhere: SAR as is, DOTA / DroneVehicle from hbox_*
    assert lines[3] == ("| csia (all horizontal) | 50.00 | 20.00 | 55.00 | 25.00 | 60.00 | 30.00 "
                        "| 52.00 | 24.00 | 23.50 |")  # fmt: skip
    assert "53.02" in lines[4]  # the paper row
