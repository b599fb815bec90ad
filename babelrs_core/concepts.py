"""The SOI-Det label space and the shared concept vocabulary.

One module owns:

* the dataset names, the sensor modalities and the split names (:data:`DATASET_NAMES`,
  :data:`MODALITIES`, :data:`SPLITS`, their ``Literal`` types and the modalities each dataset may
  carry, :data:`DATASET_MODALITIES`);
* the per-dataset class lists (SARDet-100K: 6, DOTA v1.0: 15, DroneVehicle: 5), in the order the
  reference code (SM3Det ``configs/_base_/datasets/SOI_Det.py``) uses for its 26-class union, where
  classes stay distinct per dataset (DOTA's ``Ship`` is not SAR's ``ship``);
* the mapping from raw class strings found in the wild (case, spaces vs hyphens vs underscores,
  DroneVehicle typos such as ``feright car`` or ``truvk``) to those canonical names;
* the plain-language concept each class maps to ("ship", "car"), the words the language pivot of the
  CSIA stage must produce, shared across sensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from babelrs_core.errors import BadInputError

Modality = Literal["sar", "rgb", "ir"]
DatasetName = Literal["sardet", "dota", "dronevehicle"]
Split = Literal["train", "val", "test"]

#: The sensors, in the reference order (SAR, optical, infrared).
MODALITIES: tuple[Modality, ...] = get_args(Modality)
#: The datasets, in the reference order (the order of the 26-class union).
DATASET_NAMES: tuple[DatasetName, ...] = get_args(DatasetName)
#: The split names, in canonical order (readers look for them, synthetic data seeds by them).
SPLITS: tuple[Split, ...] = get_args(Split)
#: Modalities each dataset may carry (DroneVehicle has an RGB half besides the IR one).
DATASET_MODALITIES: dict[str, tuple[str, ...]] = {
    "sardet": ("sar",),
    "dota": ("rgb",),
    "dronevehicle": ("ir", "rgb"),
}


@dataclass(frozen=True)
class ClassInfo:
    """One class of one dataset."""

    name: str  # canonical name inside its dataset (official spelling)
    soi_name: str  # spelling in the SOI-Det 26-class union (case keeps datasets apart)
    concept: str  # plain-language noun phrase shared across sensors
    plural: str  # plural of ``concept`` for counting instructions


@dataclass(frozen=True)
class DatasetInfo:
    """A detection dataset of the SOI-Det benchmark."""

    name: DatasetName
    modality: Modality
    box_type: Literal["hbox", "obox"]
    classes: tuple[ClassInfo, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)


def _c(name: str, soi: str, concept: str, plural: str | None = None) -> ClassInfo:
    return ClassInfo(name, soi, concept, plural or concept + "s")


DATASETS: dict[str, DatasetInfo] = {
    "sardet": DatasetInfo(
        "sardet",
        "sar",
        "hbox",
        (
            _c("ship", "ship", "ship"),
            _c("aircraft", "aircraft", "airplane"),
            _c("car", "car", "car"),
            _c("tank", "tank", "storage tank"),
            _c("bridge", "bridge", "bridge"),
            _c("harbor", "harbor", "harbor"),
        ),
    ),
    "dota": DatasetInfo(
        "dota",
        "rgb",
        "obox",
        (
            _c("small-vehicle", "small-vehicle", "car"),
            _c("large-vehicle", "large-vehicle", "large vehicle"),
            _c("plane", "plane", "airplane"),
            _c("ship", "Ship", "ship"),
            _c("harbor", "Harbor", "harbor"),
            _c("tennis-court", "tennis-court", "tennis court"),
            _c("soccer-ball-field", "soccer-ball-field", "soccer field"),
            _c("ground-track-field", "ground-track-field", "running track"),
            _c("baseball-diamond", "baseball-diamond", "baseball field"),
            _c("swimming-pool", "swimming-pool", "swimming pool"),
            _c("roundabout", "roundabout", "roundabout"),
            _c("basketball-court", "basketball-court", "basketball court"),
            _c("storage-tank", "storage-tank", "storage tank"),
            _c("bridge", "Bridge", "bridge"),
            _c("helicopter", "helicopter", "helicopter"),
        ),
    ),
    "dronevehicle": DatasetInfo(
        "dronevehicle",
        "ir",
        "obox",
        (
            _c("car", "CAR", "car"),
            _c("bus", "BUS", "bus", "buses"),
            _c("freight car", "FERIGHT_CAR", "freight truck"),
            _c("truck", "TRUCK", "truck"),
            _c("van", "VAN", "van"),
        ),
    ),
}
assert tuple(DATASETS) == DATASET_NAMES == tuple(DATASET_MODALITIES)
assert all(info.modality == DATASET_MODALITIES[ds][0] for ds, info in DATASETS.items())

#: The 26-class union in the reference order: SAR 0-5, DOTA 6-20, DroneVehicle 21-25.
SOI_DET_CLASSES: tuple[str, ...] = tuple(
    c.soi_name for ds in DATASET_NAMES for c in DATASETS[ds].classes
)

#: DOTA v1.0's own class order (devkit order), kept for writers that want it.
DOTA_V1_ORDER: tuple[str, ...] = (
    "plane",
    "ship",
    "storage-tank",
    "baseball-diamond",
    "tennis-court",
    "basketball-court",
    "ground-track-field",
    "harbor",
    "bridge",
    "large-vehicle",
    "small-vehicle",
    "helicopter",
    "roundabout",
    "soccer-ball-field",
    "swimming-pool",
)

# Raw spellings seen in the wild that are not a case/separator variant of a canonical name.
# DroneVehicle: ``feright*`` typos and ``truvk``; ``*`` marks an unsure object (see IGNORED_RAW).
_ALIASES: dict[str, dict[str, str]] = {
    "sardet": {"plane": "aircraft", "airplane": "aircraft", "oiltank": "tank", "oil tank": "tank"},
    "dota": {},
    "dronevehicle": {
        "feright car": "freight car",
        "feright_car": "freight car",
        "feright": "freight car",
        "freight_car": "freight car",
        "freight": "freight car",
        "truvk": "truck",
    },
}

#: Raw labels we deliberately drop (counted by importers, never silently mapped). DroneVehicle's
#: ``*`` is an annotator's "unsure" mark; one public converter maps it to freight car, another
#: ignores it: dropping is the safer choice.
IGNORED_RAW: dict[str, frozenset[str]] = {"dronevehicle": frozenset({"*"})}


class UnknownClassError(BadInputError):
    """A raw class string that maps to no class of its dataset."""


def _key(raw: str) -> str:
    return re.sub(r"[\s_\-]+", " ", raw.strip().lower())


def _build_index() -> dict[str, dict[str, str]]:
    index: dict[str, dict[str, str]] = {}
    for ds, info in DATASETS.items():
        table: dict[str, str] = {}
        for c in info.classes:
            table[_key(c.name)] = c.name
            table[_key(c.soi_name)] = c.name
        for raw, canon in _ALIASES[ds].items():
            table[_key(raw)] = canon
        index[ds] = table
    return index


_INDEX = _build_index()


def dataset(name: str) -> DatasetInfo:
    """The dataset called ``name``; a clear error lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def is_ignored(dataset_name: str, raw: str) -> bool:
    """True for raw labels that are dropped on purpose (e.g. DroneVehicle's ``*``)."""
    return raw.strip() in IGNORED_RAW.get(dataset_name, frozenset())


def normalize(dataset_name: str, raw: str) -> str:
    """Map a raw class string to the canonical class name of ``dataset_name``.

    Case, surrounding blanks and the choice of space / hyphen / underscore do not matter;
    known typos are fixed. Raises :class:`UnknownClassError` naming the allowed classes otherwise.
    """
    table = _INDEX[dataset(dataset_name).name]
    try:
        return table[_key(raw)]
    except KeyError:
        allowed = ", ".join(DATASETS[dataset_name].class_names)
        raise UnknownClassError(
            f"class {raw!r} is not a {dataset_name} class (allowed: {allowed})"
        ) from None


def class_info(dataset_name: str, name: str) -> ClassInfo:
    """The :class:`ClassInfo` of canonical class ``name`` in ``dataset_name``."""
    for c in dataset(dataset_name).classes:
        if c.name == name:
            return c
    raise UnknownClassError(f"{name!r} is not a canonical {dataset_name} class")


def soi_label(dataset_name: str, name: str) -> int:
    """Index of a canonical class in the 26-class SOI-Det union."""
    return SOI_DET_CLASSES.index(class_info(dataset_name, name).soi_name)


def concept(dataset_name: str, name: str) -> str:
    """The plain-language concept ("ship", "car") that a class stands for."""
    return class_info(dataset_name, name).concept


def concepts_shared_across_modalities() -> dict[str, tuple[str, ...]]:
    """Concepts that at least two sensors share, with the datasets that have them."""
    seen: dict[str, list[str]] = {}
    for ds, info in DATASETS.items():
        for c in info.classes:
            seen.setdefault(c.concept, [])
            if ds not in seen[c.concept]:
                seen[c.concept].append(ds)
    return {k: tuple(v) for k, v in seen.items() if len(v) > 1}
