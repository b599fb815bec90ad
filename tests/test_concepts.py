"""The SOI-Det label space: normalisation table, 26-class order, shared concepts, errors."""

from __future__ import annotations

import pytest

from babelrs_core import concepts
from babelrs_core.concepts import (
    DATASETS,
    DOTA_V1_ORDER,
    SOI_DET_CLASSES,
    UnknownClassError,
    concept,
    concepts_shared_across_modalities,
    is_ignored,
    normalize,
    soi_label,
)

#: The joint class tuple of SM3Det ``configs/_base_/datasets/SOI_Det.py``, verbatim
#: (docs/soi_mini.md §5.4).
SM3DET_CLASSES = (
    "ship", "aircraft", "car", "tank", "bridge", "harbor",
    "small-vehicle", "large-vehicle", "plane", "Ship", "Harbor", "tennis-court",
    "soccer-ball-field", "ground-track-field", "baseball-diamond", "swimming-pool",
    "roundabout", "basketball-court", "storage-tank", "Bridge", "helicopter",
    "CAR", "BUS", "FERIGHT_CAR", "TRUCK", "VAN",
)  # fmt: skip


@pytest.mark.parametrize(
    ("dataset", "raw", "canonical"),
    [
        # SARDet-100K: the MSFA names, any case, and a few synonyms
        ("sardet", "ship", "ship"),
        ("sardet", "Aircraft", "aircraft"),
        ("sardet", "plane", "aircraft"),
        ("sardet", " HARBOR ", "harbor"),
        # DOTA: hyphenated names, separators and case don't matter, SOI-Det capitals
        ("dota", "small-vehicle", "small-vehicle"),
        ("dota", "small vehicle", "small-vehicle"),
        ("dota", "Small_Vehicle", "small-vehicle"),
        ("dota", "storage-tank", "storage-tank"),
        ("dota", "Ship", "ship"),
        ("dota", "Harbor", "harbor"),
        ("dota", "Bridge", "bridge"),
        # DroneVehicle: typos of the real XML files and SOI-Det's upper-case names
        ("dronevehicle", "car", "car"),
        ("dronevehicle", "feright car", "freight car"),
        ("dronevehicle", "feright_car", "freight car"),
        ("dronevehicle", "feright", "freight car"),
        ("dronevehicle", "FERIGHT_CAR", "freight car"),
        ("dronevehicle", "freight car", "freight car"),
        ("dronevehicle", "truvk", "truck"),
        ("dronevehicle", "TRUCK", "truck"),
        ("dronevehicle", "Bus", "bus"),
        ("dronevehicle", "VAN", "van"),
    ],
)
def test_normalisation_table(dataset: str, raw: str, canonical: str) -> None:
    assert normalize(dataset, raw) == canonical


def test_soi_det_union_order_equals_the_sm3det_tuple() -> None:
    assert SOI_DET_CLASSES == SM3DET_CLASSES
    assert len(SOI_DET_CLASSES) == 26


def test_per_dataset_class_counts() -> None:
    assert [len(DATASETS[d].classes) for d in ("sardet", "dota", "dronevehicle")] == [6, 15, 5]
    assert set(DATASETS["dota"].class_names) == set(DOTA_V1_ORDER)
    assert DATASETS["sardet"].class_names == ("ship", "aircraft", "car", "tank", "bridge", "harbor")


def test_soi_labels_keep_datasets_apart() -> None:
    assert soi_label("sardet", "ship") == 0
    assert soi_label("dota", "ship") == 9  # 'Ship'
    assert soi_label("dota", "bridge") == 19  # 'Bridge'
    assert soi_label("dronevehicle", "car") == 21  # 'CAR', not SAR's 'car' (2)
    assert soi_label("dronevehicle", "freight car") == 23  # 'FERIGHT_CAR'
    labels = [soi_label(d, c) for d, info in DATASETS.items() for c in info.class_names]
    assert sorted(labels) == list(range(26))


def test_concepts_are_shared_across_sensors() -> None:
    shared = concepts_shared_across_modalities()
    assert shared["ship"] == ("sardet", "dota")
    assert shared["car"] == ("sardet", "dota", "dronevehicle")
    assert shared["airplane"] == ("sardet", "dota")
    for name in ("storage tank", "bridge", "harbor"):
        assert shared[name] == ("sardet", "dota")
    assert "helicopter" not in shared
    assert concept("sardet", "aircraft") == concept("dota", "plane") == "airplane"
    assert concept("dota", "small-vehicle") == concept("dronevehicle", "car") == "car"


def test_unknown_class_error_lists_allowed_names() -> None:
    with pytest.raises(UnknownClassError) as err:
        normalize("dronevehicle", "tractor")
    msg = str(err.value)
    assert "'tractor'" in msg
    assert "allowed: car, bus, freight car, truck, van" in msg
    assert isinstance(err.value, ValueError)


def test_sar_class_names_are_not_dota_classes() -> None:
    with pytest.raises(UnknownClassError, match="allowed: small-vehicle"):
        normalize("dota", "aircraft")


def test_star_is_ignored_not_mapped() -> None:
    assert is_ignored("dronevehicle", "*") and is_ignored("dronevehicle", " * ")
    assert not is_ignored("dronevehicle", "car") and not is_ignored("dota", "*")
    with pytest.raises(UnknownClassError):
        normalize("dronevehicle", "*")


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="known: sardet, dota, dronevehicle"):
        concepts.dataset("xview")
