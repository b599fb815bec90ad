"""Ablation aggregation on hand-made rows: mean +- spread, non-finite steps, the ordering
statement, cosine curves and the PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelrs_core.ablation.ordering import bottleneck, brief, ordering, statement
from babelrs_core.ablation.plots import write_plots
from babelrs_core.ablation.rows import aggregate, cosine_curves, first_nonfinite, spread_of
from tests.images import assert_png


def _eval(hmap: float, sar: float = 50.0) -> dict:
    return {
        "overall": {"ap50": 2 * hmap, "map": hmap + 1, "hmap": hmap},
        "sardet": {"ap50": sar, "map": sar / 2},
    }


def _row(variant: str, seed: int, hmap: float, precision: str = "fp32", **kw) -> dict:
    row = {
        "variant": variant, "label": variant.upper(), "precision": precision, "seed": seed,
        "mode": "full", "init": "csia", "iters": 10, "status": "ok", "error": None,
        "eval": _eval(hmap), "nonfinite_steps": 0, "first_nonfinite": None,
        "s_per_iter": 1.0, "cpu_s_per_iter": 0.9, "loss_scale_final": None, "final_loss": 1.0,
        "grad_norm": [[1, 2.0], [2, 1.5], [3, None], [4, 1.2]],
        "gradcos": {"dota~sardet": [[1, 0.1], [2, -0.2]], "dronevehicle~sardet": [[1, 0.3]]},
        "train_s": 10.0,
    }  # fmt: skip
    row.update(kw)
    return row


def test_mean_and_spread_over_seeds() -> None:
    rows = [
        _row("a", 0, 10.0, nonfinite_steps=2, first_nonfinite=7),
        _row("a", 1, 14.0, nonfinite_steps=1, first_nonfinite=3),
        _row("b", 0, 5.0),
        _row("b", 1, 0.0, status="failed", eval=None),
    ]
    a, b = aggregate(rows, "half_range")
    assert a["mean"]["overall.hmap"] == 12.0 and a["spread"]["overall.hmap"] == 2.0
    assert a["mean"]["sardet.map"] == 25.0 and a["spread"]["sardet.map"] == 0.0
    assert a["seeds"] == [0, 1] and a["nonfinite_steps"] == 3 and a["first_nonfinite"] == 3
    assert b["seeds"] == [0] and b["failed"] == [1] and b["spread"]["overall.hmap"] == 0.0
    std = aggregate(rows[:2], "std")[0]
    assert std["spread"]["overall.hmap"] == pytest.approx(2.8284271, rel=1e-6)
    assert spread_of([1.0, 4.0, 2.0]) == 1.5
    with pytest.raises(ValueError, match="half_range"):
        spread_of([1.0, 2.0], "iqr")


def test_ordering_that_held_beyond_the_spread() -> None:
    rows = [_row(v, s, h + s) for v, h in (("ours", 20), ("last", 15), ("img", 10)) for s in (0, 1)]
    order = ordering(aggregate(rows), ["ours", "last", "img"], "hmap", "fp32")
    assert order["held"] and order["clear"]
    assert order["measured"] == ["ours", "last", "img"]
    assert order["concordant"] == order["total_pairs"] == 3
    text = statement(order)
    assert "**The paper's ordering held here**" in text
    assert "every adjacent gap exceeds the seed spreads" in text


def test_ordering_that_did_not_hold_names_the_flipped_pairs() -> None:
    rows = [
        _row("ours", 0, 10.0), _row("ours", 1, 12.0),  # 11 +- 1
        _row("last", 0, 11.0), _row("last", 1, 13.0),  # 12 +- 1: flipped, within the spread
        _row("img", 0, 20.0), _row("img", 1, 20.0),  # 20 +- 0: flipped, beyond the spread
    ]  # fmt: skip
    order = ordering(aggregate(rows), ["ours", "last", "img"], "hmap", "fp32")
    assert not order["held"] and order["measured"] == ["img", "last", "ours"]
    assert [(p["better"], p["worse"], p["kept"], p["beyond_spread"]) for p in order["pairs"]] == [
        ("ours", "last", False, False),
        ("last", "img", False, True),
    ]
    assert order["concordant"] == 0
    text = statement(order)
    assert "**The paper's ordering did not hold here**" in text
    assert "ours − last = -1.00 (flipped, within the seed spread 2.00)" in text
    assert "last − img = -8.00 (flipped, beyond the seed spread 1.00)" in text
    assert "Measured: img 20.00 > last 12.00 > ours 11.00." in text
    assert "0 of 3 variant pairs" in text


def test_kept_pairs_within_the_spread_are_named_when_the_ordering_fails() -> None:
    rows = [
        _row("ours", 0, 10.0), _row("ours", 1, 14.0),  # 12 +- 2
        _row("last", 0, 11.0), _row("last", 1, 11.0),  # 11 +- 0: kept, within the spread
        _row("img", 0, 20.0), _row("img", 1, 20.0),  # 20: flipped, beyond
    ]  # fmt: skip
    text = statement(ordering(aggregate(rows), ["ours", "last", "img"], "hmap", "fp32"))
    assert "in the expected order but within the seed spread: ours − last = +1.00 vs spread" in text


def test_brief_line_for_a_secondary_metric() -> None:
    rows = [_row(v, s, h) for v, h in (("ours", 5.0), ("img", 9.0)) for s in (0, 1)]
    order = ordering(aggregate(rows), ["ours", "img"], "map", "fp32")  # map = hmap + 1
    line = brief(order)
    assert line.startswith("overall mAP: img 10.00 > ours 6.00")
    assert "did not hold; 0 of 1 pairs" in line
    held = brief(ordering(aggregate(rows), ["img", "ours"], "ap50", "fp32"))
    assert "overall AP@50: img 18.00 > ours 10.00" in held and "held beyond the spreads" in held
    # a study expects no ordering: the means only, no verdict
    assert brief(ordering(aggregate(rows), ["ours"], "map", "fp32")) == (
        "overall mAP: img 10.00 > ours 6.00"
    )


def test_bottleneck_names_the_lowest_map_dataset() -> None:
    low = {"overall": {"hmap": 1.0}, "sardet": {"map": 20.0}, "dota": {"map": 0.5},
           "dronevehicle": {"map": 9.0}}  # fmt: skip
    rows = [_row(v, s, 1.0, eval=low) for v in ("ours", "img") for s in (0, 1)]
    text = bottleneck(aggregate(rows), "fp32")
    assert text is not None and "at most 3 × the lowest" in text
    assert "DOTA in every variant (mAP 0.50–0.50)" in text
    assert bottleneck(aggregate(rows), "fp16") is None


def test_a_tie_does_not_count_as_held() -> None:
    rows = [_row(v, s, 10.0) for v in ("ours", "img") for s in (0, 1)]
    order = ordering(aggregate(rows), ["ours", "img"], "hmap", "fp32")
    assert not order["held"] and order["concordant"] == 0
    text = statement(order)
    assert "Measured: ours 10.00 = img 10.00." in text
    assert "ours − img = +0.00 (tied, within the seed spread 0.00)" in text


def test_ordering_with_a_variant_missing_does_not_hold() -> None:
    rows = [_row("ours", s, 20.0) for s in (0, 1)] + [_row("img", s, 10.0) for s in (0, 1)]
    order = ordering(aggregate(rows), ["ours", "last", "img"], "hmap", "fp32")
    assert not order["held"] and order["missing"] == ["last"]
    assert "Not measured: last" in statement(order)
    other = ordering(aggregate(rows), ["ours", "img"], "hmap", "fp16")
    assert other["scores"] == {} and "cannot be checked" in statement(other)


def test_first_nonfinite_and_measured_cosines_from_a_history() -> None:
    hist = [
        {"iter": 1, "nonfinite_steps": 0, "gradcos.encoder.a~b": 0.5},
        {"iter": 2, "nonfinite_steps": 0, "gradcos.encoder.a~b": 0.5},  # repeated, not measured
        {"iter": 3, "nonfinite_steps": 1, "gradcos.encoder.a~b": 0.5},
        {"iter": 4, "nonfinite_steps": 1, "gradcos.encoder.a~b": -0.25},
    ]
    assert first_nonfinite(hist) == 3
    assert first_nonfinite(hist[:2]) is None
    assert cosine_curves(hist, 2) == {"a~b": [[1, 0.5], [2, 0.5], [4, -0.25]]}
    assert cosine_curves(hist, 4) == {"a~b": [[1, 0.5], [4, -0.25]]}


def test_plots_are_written_per_precision(tmp_path: Path) -> None:
    rows = [_row(v, s, 10.0) for v in ("ours", "img") for s in (0, 1)]
    rows += [_row("ours", 0, 0.0, precision="fp16", mode="probe", eval=None, gradcos={})]
    paths = write_plots(rows, tmp_path)
    assert sorted(p.name for p in paths) == [
        "grad_cosine_fp32.png",
        "grad_norm_fp16_probe.png",
        "grad_norm_fp32.png",
    ]
    for p in paths:
        assert_png(p, min_size=(200, 150), min_colours=10)
