"""Run fingerprints: what changed between a checkpoint's params and the run's."""

from __future__ import annotations

from babelrs_core.fingerprint import fingerprint_changes


def test_equal_fingerprints_have_no_changes_even_across_json() -> None:
    assert (
        fingerprint_changes({"a": (1, 2), "b": {"c": 1.0}}, {"a": [1, 2], "b": {"c": 1.0}}) is None
    )


def test_changes_name_dotted_keys_with_both_values() -> None:
    changes = fingerprint_changes({"finetune": {"lr": 1.0}, "seed": 0}, {"finetune": {"lr": 0.5}})
    assert changes == "finetune.lr: 1.0 -> 0.5, seed: 0 -> None"


def test_many_changes_are_cut_with_a_count() -> None:
    changes = fingerprint_changes({f"k{i}": i for i in range(9)}, {}, most=2)
    assert changes == "k0: 0 -> None, k1: 1 -> None and 7 more"


def test_an_empty_mapping_counts_as_a_change() -> None:
    assert fingerprint_changes({"a": {}, "b": 1}, {"b": 1}) == "a: {} -> None"
