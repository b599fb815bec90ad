"""The promotion rule on eval.json mappings: floor, margin, per-dataset drop, tags."""

from __future__ import annotations

from babelrs_core.registry.gate import decide


def _ev(hmap: float, **maps: float) -> dict:
    return {
        "overall": {"hmap": hmap, "map": 0.0, "ap50": 0.0},
        **{k: {"map": v} for k, v in maps.items()},
    }


RULE = {"margin": 1.0, "max_drop": 5.0, "floor": 10.0}


def test_first_version_needs_the_floor() -> None:
    low = decide(_ev(9.99, sardet=20.0), None, **RULE)
    assert not low.promote and "floor" in low.reason
    ok = decide(_ev(10.0, sardet=20.0), None, **RULE)
    assert ok.promote and ok.as_tags()["gate.decision"] == "promoted"


def test_gain_below_margin_is_rejected_and_says_so() -> None:
    d = decide(_ev(20.5, sardet=30, dota=20), _ev(20.0, sardet=30, dota=20), **RULE,
               champion_version="3")  # fmt: skip
    assert not d.promote and "below margin" in d.reason and "v3" in d.reason
    tags = d.as_tags()
    assert tags["gate.decision"] == "rejected" and tags["gate.gain"] == "0.5000"
    assert tags["gate.champion_version"] == "3"


def test_a_dataset_dropping_more_than_delta_blocks_an_h_map_gain() -> None:
    champ = _ev(20.0, sardet=30, dota=20, dronevehicle=15)
    chall = _ev(25.0, sardet=24.9, dota=30, dronevehicle=25)  # sardet -5.1
    d = decide(chall, champ, **RULE)
    assert not d.promote and "sardet -5.10" in d.reason
    assert d.as_tags()["gate.drop.sardet"] == "5.1000"
    fine = decide(_ev(25.0, sardet=25.0, dota=30, dronevehicle=25), champ, **RULE)  # -5.0
    assert fine.promote and fine.drops["sardet"] == 5.0


def test_a_dataset_the_challenger_lacks_counts_as_a_fall_to_zero() -> None:
    d = decide(_ev(30.0, sardet=40), _ev(20.0, sardet=30, dota=20), **RULE)
    assert not d.promote and d.drops["dota"] == 20.0


def test_model_card_from_tags() -> None:
    from babelrs_core.registry.card import model_card

    tags = {"eval.sardet.ap50": "48.71", "eval.sardet.map": "24.94", "eval.dota.ap50": "48.98",
            "eval.dota.map": "24.82", "eval.overall.ap50": "46.59", "eval.overall.map": "22.92",
            "eval.overall.hmap": "22.17", "eval.splits": "dota:val,sardet:test",
            "eval.data_hash": "abc", "detector.encoder": "efficientnet_lite0",
            "detector.init": "csia", "detector.sha256": "f00", "git.commit": "c0ffee",
            "git.dirty": "true"}  # fmt: skip
    card = model_card("babelrs-detector", "3", tags, "run1")
    assert card.startswith("**babelrs-detector v3**") and "efficientnet_lite0 encoder (csia" in card
    assert "| sardet | 48.71 | 24.94 |  |" in card and "| overall | 46.59 | 22.92 | 22.17 |" in card
    assert "dronevehicle" not in card  # only the datasets it was evaluated on
    assert "not put through the promotion gate" in card
    assert "`c0ffee` (uncommitted changes)" in card and "MLflow run `run1`" in card
    verdict = {"gate.decision": "rejected", "gate.reason": "below margin"}
    gated = model_card("m", "3", {**tags, **verdict})
    assert "Gate: **rejected**: below margin." in gated
