"""The end-of-run summaries: the parent run's headline numbers and the Prefect markdown artifact."""

from __future__ import annotations

import io

from rich.console import Console

from babelrs_core.summary import headline_metrics, render_summary, summary_markdown

RESULTS = {
    "validate": {"passed": True, "checks": 49, "images": 280, "objects": 1932,
                 "mlflow_run_id": "r-val"},
    "evaluate": {
        "sardet": {"ap50": 48.71, "map": 24.94, "images": 40, "objects": 124},
        "dota": {"ap50": 48.98, "map": 24.82, "images": 40, "objects": 166},
        "dronevehicle": {"ap50": 41.18, "map": 18.2, "images": 40, "objects": 412},
        "overall": {"ap50": 46.59, "map": 22.92, "hmap": 22.17},
        "out": "outputs/eval",
        "mlflow_run_id": "r-eval",
    },
    "register": {"version": "3", "model_uri": "models:/babelrs-detector/3", "promoted": False,
                 "gate": {"gate.decision": "rejected", "gate.reason": "below margin"}},
}  # fmt: skip


def test_headline_metrics() -> None:
    got = headline_metrics(RESULTS)
    assert got["hmap"] == 22.17 and got["map"] == 22.92 and got["ap50"] == 46.59
    assert got["dronevehicle.map"] == 18.2 and got["sardet.ap50"] == 48.71
    assert got["registered_version"] == 3.0 and got["promoted"] == 0.0
    assert "dronevehicle.hmap" not in got
    assert headline_metrics({"generate": {"out": "x"}}) == {}  # a partial run: nothing to claim


def test_summary_markdown() -> None:
    md = summary_markdown(RESULTS, "r-parent")
    assert "| dronevehicle | ir | 41.18 | 18.20 |" in md and "| **H-mAP** | | | **22.17** |" in md
    assert "Registered `models:/babelrs-detector/3`: gate **rejected** (below margin)." in md
    assert "Data validation passed: 49 checks over 280 images, 1932 objects." in md
    assert "| pipeline (parent) | `r-parent` |" in md and "| evaluate | `r-eval` |" in md
    failed = summary_markdown({"validate": {**RESULTS["validate"], "passed": False}})
    assert "Data validation FAILED" in failed and "H-mAP" not in failed


def test_render_summary_prints_the_table() -> None:
    out = io.StringIO()
    render_summary(RESULTS, Console(file=out, width=120))
    text = out.getvalue()
    assert "22.17" in text and "dronevehicle" in text and "outputs/eval" in text
