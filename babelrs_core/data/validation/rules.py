"""The data validation rules, each written twice: as a Great Expectations expectation and as a
plain vectorised pandas check of the same rule.

The stage (:mod:`babelrs_core.data.validation.stage`) runs the GX versions
(:mod:`babelrs_core.data.validation.suites`); the pandas versions (:func:`run_pandas`) are the
reference that ``bench/validation.py`` times GX against and that the tests compare GX with (both
must flag the same rows).

Two tables are checked:

* the **manifest** (one row per object, :mod:`babelrs_core.data.manifest`) plus derived columns
  from :func:`prepare_manifest` (polygon length and area, expected label, distinct images behind
  one ``image_id``, ``dataset/class`` style keys). Per-dataset rules are written over those keys
  (``dota/plane`` in the set of valid pairs) instead of one GX row condition per dataset: same
  rule, a third of the expectations, and GX's per-expectation overhead dominates small tables;
* the **image facts** (one row per image, :func:`babelrs_core.data.validation.images.image_facts`):
  whether the file exists and decodes, its bytes still hash to the manifest's sha256, its decoded
  size, bands, dtype and pixel std.

A :class:`Rule` is either a *row* rule (some rows offend: GX map expectations, pandas boolean
masks) or an *aggregate* rule (expected values missing from a column: GX
``ExpectColumnDistinctValuesToContainSet`` / row count, pandas set differences). Every rule has a
plain-words description and a ``detail`` function saying what is wrong with one offending row (or
which value is missing).

Null handling follows GX: map rules skip null values (a null is the business of the not-null
rules), pair rules skip rows where either value is null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from babelrs_core.concepts import (
    DATASET_MODALITIES,
    DATASETS,
    MODALITIES,
    SOI_DET_CLASSES,
    SPLITS,
)
from babelrs_core.data.integrity import content_changed
from babelrs_core.data.manifest import IMAGE_COLUMNS
from babelrs_core.geometry import poly_areas

#: Columns that no manifest row may leave empty.
REQUIRED: tuple[str, ...] = (*IMAGE_COLUMNS, "object_index", "source_file")
#: Columns that every object row (``object_index >= 0``) must fill (``poly`` via its length).
OBJECT_REQUIRED: tuple[str, ...] = ("class_name", "label", "x1", "y1", "x2", "y2", "poly")
#: Pixel dtypes an image may decode to (Pillow modes L/RGB/P -> uint8, I;16 -> uint16, ...).
ANY_DTYPE: tuple[str, ...] = ("uint8", "uint16", "int32", "float32", "bool")
#: Columns used to say where a row comes from (kept out of the GX frame unless a rule reads them).
LOCATION: tuple[str, ...] = ("image_id", "object_index", "source_file", "source_line", "path")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "empty"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Cond:
    """A row filter: ``column op value`` terms that must all hold."""

    terms: tuple[tuple[str, str, Any], ...] = ()

    def __and__(self, other: Cond) -> Cond:
        return Cond(self.terms + other.terms)

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        out = pd.Series(True, index=frame.index)
        for column, op, value in self.terms:
            col = frame[column]
            out &= (col == value) if op == "==" else (col >= value)
        return out.fillna(False).astype(bool)

    def gx(self) -> Any:
        """The GX 1.x ``row_condition`` (``Column(...) >= ...`` objects), or None."""
        if not self.terms:
            return None
        from great_expectations.expectations.row_conditions import Column

        parts = [Column(c) == v if op == "==" else Column(c) >= v for c, op, v in self.terms]
        cond = parts[0]
        for p in parts[1:]:
            cond = cond & p
        return cond


ALL = Cond()
OBJECTS = Cond((("object_index", ">=", 0),))


@dataclass(frozen=True)
class Rule:
    """One check, as a GX expectation and as a pandas check."""

    id: str
    description: str  # plain words, shown in the report and (as notes) in Data Docs
    kind: str  # "row" | "aggregate"
    gx_type: str  # GX expectation class name, e.g. "ExpectColumnValuesToBeInSet"
    gx_kwargs: dict[str, Any]
    where: Cond = ALL
    mask: Callable[[pd.DataFrame], pd.Series] | None = None  # row rules: offending rows
    missing: Callable[[pd.DataFrame], list[Any]] | None = None  # aggregate rules
    # row rules: what is wrong with one offending row; aggregate rules: with one missing value
    detail: Callable[[Any], str] | None = None
    table: str = "manifest"  # "manifest" | "images"

    @property
    def columns(self) -> set[str]:
        """Columns the rule reads."""
        kw = self.gx_kwargs
        cols = {kw[k] for k in ("column", "column_A", "column_B") if k in kw}
        cols |= set(kw.get("column_list", ()))
        return cols | {t[0] for t in self.where.terms}

    def expectation(self) -> Any:
        """The GX expectation object (GX is imported lazily: it takes seconds)."""
        import great_expectations.expectations as gxe

        kwargs = dict(self.gx_kwargs)
        cond = self.where.gx()
        if cond is not None:
            kwargs["row_condition"] = cond
        return getattr(gxe, self.gx_type)(**kwargs, notes=self.description, meta={"check": self.id})

    def offending(self, frame: pd.DataFrame) -> pd.Series:
        """Pandas: boolean mask of the offending rows (row rules)."""
        assert self.mask is not None
        return (self.where.mask(frame) & self.mask(frame).fillna(False)).astype(bool)

    def missing_values(self, frame: pd.DataFrame) -> list[Any]:
        """Pandas: the expected values that are absent (aggregate rules)."""
        assert self.missing is not None
        return self.missing(frame[self.where.mask(frame)])


def gx_frame(frame: pd.DataFrame, rules: Sequence[Rule]) -> pd.DataFrame:
    """Only the columns ``rules`` read (GX's pandas row filters cost per column)."""
    needed = set().union(*(r.columns for r in rules)) if rules else set()
    return frame[[c for c in frame.columns if c in needed]]


# ------------------------------------------------------------------------------ rule makers


def _row_rule(
    rule_id: str,
    description: str,
    gx_type: str,
    gx_kwargs: dict[str, Any],
    mask: Callable[[pd.DataFrame], pd.Series],
    detail: Callable[[Any], str],
    table: str = "manifest",
    where: Cond = ALL,
) -> Rule:
    """A row rule: ``mask`` flags the offending rows, ``detail`` says what is wrong with one."""
    return Rule(
        id=rule_id,
        description=description,
        kind="row",
        gx_type=gx_type,
        gx_kwargs=gx_kwargs,
        where=where,
        mask=mask,
        detail=detail,
        table=table,
    )


def _not_null(rule_id: str, column: str, where: Cond, what: str, shown: str = "") -> Rule:
    shown = shown or column
    return _row_rule(
        rule_id,
        f"{shown} is filled in on every {what}",
        "ExpectColumnValuesToNotBeNull",
        {"column": column},
        lambda f: f[column].isna(),
        lambda r: f"{shown} is empty",
        where=where,
    )


def _in_set(
    rule_id: str,
    column: str,
    allowed: Sequence[Any],
    description: str,
    detail: Callable[[Any], str] | None = None,
    table: str = "manifest",
) -> Rule:
    allowed = list(allowed)
    shown = ", ".join(str(a) for a in allowed)
    return _row_rule(
        rule_id,
        description,
        "ExpectColumnValuesToBeInSet",
        {"column": column, "value_set": allowed},
        lambda f: f[column].notna() & ~f[column].isin(allowed),
        detail or (lambda r: f"{column} {_fmt(r[column])} is not one of: {shown}"),
        table,
    )


def _at_least(
    rule_id: str,
    column: str,
    low: float,
    description: str,
    strict: bool = False,
    detail: Callable[[Any], str] | None = None,
    table: str = "manifest",
) -> Rule:
    def mask(f: pd.DataFrame, c: str = column, lo: float = low) -> pd.Series:
        return f[c].notna() & ((f[c] <= lo) if strict else (f[c] < lo))

    kwargs: dict[str, Any] = {"column": column, "min_value": low}
    if strict:
        kwargs["strict_min"] = True
    word = "at or below" if strict else "below"
    return _row_rule(
        rule_id,
        description,
        "ExpectColumnValuesToBeBetween",
        kwargs,
        mask,
        detail or (lambda r: f"{column} = {_fmt(r[column])} is {word} {low:g}"),
        table,
    )


def _pair(
    rule_id: str,
    a: str,
    b: str,
    op: str,
    description: str,
    detail: Callable[[Any], str],
    table: str = "manifest",
) -> Rule:
    """Rows (both values filled) where ``a op b`` must hold; ``op`` in ``>``, ``>=``, ``==``."""

    def mask(f: pd.DataFrame) -> pd.Series:
        both = f[a].notna() & f[b].notna()
        ok = {">": f[a] > f[b], ">=": f[a] >= f[b], "==": f[a] == f[b]}[op]
        return both & ~ok.fillna(False).astype(bool)

    if op == "==":
        gx_type, kwargs = "ExpectColumnPairValuesToBeEqual", {}
    else:
        gx_type, kwargs = "ExpectColumnPairValuesAToBeGreaterThanB", {"or_equal": op == ">="}
    pair = {"column_A": a, "column_B": b, "ignore_row_if": "either_value_is_missing", **kwargs}
    return _row_rule(rule_id, description, gx_type, pair, mask, detail, table)


def _contains(
    rule_id: str,
    column: str,
    expected: Sequence[Any],
    description: str,
    detail: Callable[[Any], str],
) -> Rule:
    expected = sorted(set(expected))

    def missing(f: pd.DataFrame, c: str = column, e: list = expected) -> list[Any]:
        present = set(f[c].dropna().unique())
        return [v for v in e if v not in present]

    return Rule(
        id=rule_id,
        description=description,
        kind="aggregate",
        gx_type="ExpectColumnDistinctValuesToContainSet",
        gx_kwargs={"column": column, "value_set": expected},
        missing=missing,
        detail=detail,
    )


def _empty_split(noun: str) -> Callable[[str], str]:
    """``detail`` of a missing ``dataset/split`` key: that split has no ``noun``."""
    return lambda v: "empty split: {} split {!r} has no {}".format(*v.split("/", 1), noun)


def _box(r: pd.Series) -> str:
    return f"box ({_fmt(r['x1'])}, {_fmt(r['y1'])}, {_fmt(r['x2'])}, {_fmt(r['y2'])})"


def _key(a: pd.Series, b: pd.Series) -> pd.Series:
    """``a/b`` as strings, null where either is null (vectorised)."""
    out = a.astype("string") + "/" + b.astype("string")
    return out.astype(object).where(a.notna() & b.notna(), None)


# --------------------------------------------------------------------------- manifest rules


def prepare_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """The manifest plus the derived columns that the rules read (vectorised except for
    unpacking the polygon lists). The index becomes a RangeIndex named ``_row``."""
    out = frame.reset_index(drop=True).copy()
    out.index.name = "_row"
    poly = out["poly"]
    has = poly.notna().to_numpy()
    lengths = np.full(len(out), np.nan)
    lengths[has] = [len(p) for p in poly[has]]
    out["poly_values"] = lengths
    area = np.full(len(out), np.nan)
    eight = lengths == 8
    if eight.any():
        a = poly_areas(np.concatenate(list(poly[eight])).astype(np.float64).reshape(-1, 8))
        area[eight] = np.where(np.isfinite(a), a, 0.0)  # NaN / inf coordinates: no valid area
    out["poly_area"] = area
    soi = {c: i for i, c in enumerate(SOI_DET_CLASSES)}
    labels = {
        f"{ds}/{c.name}": soi[c.soi_name] for ds, info in DATASETS.items() for c in info.classes
    }
    is_obj = out["object_index"] >= 0
    out["dataset_class"] = _key(out["dataset"], out["class_name"])
    out["dataset_modality"] = _key(out["dataset"], out["modality"])
    out["dataset_split"] = _key(out["dataset"], out["split"])
    out["object_split"] = out["dataset_split"].where(is_obj, None)
    out["train_class"] = out["dataset_class"].where(is_obj & (out["split"] == "train"), None)
    out["label_expected"] = out["dataset_class"].map(labels).astype("float64")
    variants = out.drop_duplicates(list(IMAGE_COLUMNS)).groupby("image_id").size()
    out["image_variants"] = out["image_id"].map(variants).astype("float64")
    return out


def manifest_location(row: pd.Series) -> str:
    """Where a manifest row comes from: ``annotation file:line (image_id, object k)``."""
    src = row.get("source_file") or row.get("path") or "?"
    line = row.get("source_line")
    pos = f"{src}:{int(line)}" if line is not None and not pd.isna(line) and line > 0 else src
    obj = row.get("object_index")
    what = row.get("image_id")
    if obj is not None and not pd.isna(obj) and obj >= 0:
        what = f"{what}, object {int(obj)}"
    return f"{pos} ({what})"


def manifest_rules(
    frame: pd.DataFrame,
    required_splits: Sequence[str] = ("train", "val"),
    train_classes: Mapping[str, Sequence[str]] | None = None,
) -> list[Rule]:
    """The manifest suite for ``frame`` (a :func:`prepare_manifest` result).

    ``required_splits`` must hold images and objects for every dataset in the frame;
    ``train_classes``: dataset -> classes that must have a train object, on top of every class
    the dataset has in any split.
    """
    rules: list[Rule] = [
        Rule(
            id="not_empty",
            description="the manifest has at least one row",
            kind="aggregate",
            gx_type="ExpectTableRowCountToBeBetween",
            gx_kwargs={"min_value": 1},
            missing=lambda f: [] if len(f) else ["rows"],
            detail=lambda _: "no rows at all (nothing was imported)",
        ),
        _row_rule(
            "unique_id",
            "image_id + object_index is unique (no object listed twice)",
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["image_id", "object_index"]},
            lambda f: f.duplicated(["image_id", "object_index"], keep=False),
            lambda r: (
                f"duplicate id: image_id {r['image_id']!r} with object_index "
                f"{_fmt(r['object_index'])} appears more than once"
            ),
        ),
        _in_set(
            "one_image_per_id",
            "image_variants",
            [1],
            "each image_id names one image (one path, size, crop, dataset, split, modality)",
            lambda r: (
                f"duplicate id: image_id {r['image_id']!r} is used by {int(r['image_variants'])} "
                f"different images (this row: {r['path']})"
            ),
        ),
    ]
    rules += [_not_null(f"not_null.{c}", c, ALL, "row") for c in REQUIRED]
    rules += [
        _not_null(
            f"object_not_null.{c}",
            "poly_values" if c == "poly" else c,
            OBJECTS,
            "object row (object_index >= 0)",
            c,
        )
        for c in OBJECT_REQUIRED
    ]
    pairs = [f"{ds}/{m}" for ds, mods in DATASET_MODALITIES.items() for m in mods]
    classes = [f"{ds}/{c}" for ds, info in DATASETS.items() for c in info.class_names]
    rules += [
        _in_set(
            "dataset_known", "dataset", list(DATASETS), "dataset is one of " + ", ".join(DATASETS)
        ),
        _in_set(
            "modality_known", "modality", MODALITIES, "modality is one of " + ", ".join(MODALITIES)
        ),
        _in_set("split_known", "split", SPLITS, "split is one of " + ", ".join(SPLITS)),
        _in_set(
            "modality_for_dataset",
            "dataset_modality",
            pairs,
            "the modality fits the dataset (sardet: sar, dota: rgb, dronevehicle: ir or rgb)",
            lambda r: f"modality {_fmt(r['modality'])} does not fit dataset {r['dataset']}",
        ),
        _in_set(
            "class_in_label_space",
            "dataset_class",
            classes,
            "class_name is in its dataset's label space",
            lambda r: (
                f"unknown class {_fmt(r['class_name'])}: not a {r['dataset']} class (allowed: "
                + ", ".join(DATASETS[r["dataset"]].class_names if r["dataset"] in DATASETS else ())
                + ")"
            ),
        ),
        _pair(
            "label_matches_class",
            "label",
            "label_expected",
            "==",
            "label is the class's index in the 26-class SOI-Det union",
            lambda r: (
                f"label {_fmt(r['label'])} but class {r['class_name']!r} is "
                f"{int(r['label_expected'])} in SOI-Det"
            ),
        ),
        _at_least("size_positive.width", "width", 1, "image width is at least 1 px"),
        _at_least("size_positive.height", "height", 1, "image height is at least 1 px"),
        _at_least("crop_non_negative.crop_x", "crop_x", 0, "crop offset x is not negative"),
        _at_least("crop_non_negative.crop_y", "crop_y", 0, "crop offset y is not negative"),
        _at_least(
            "box_inside_image.x1",
            "x1",
            0,
            "box left edge x1 >= 0 (inside the image)",
            detail=lambda r: f"box outside the image: {_box(r)} starts left of x=0",
        ),
        _at_least(
            "box_inside_image.y1",
            "y1",
            0,
            "box top edge y1 >= 0 (inside the image)",
            detail=lambda r: f"box outside the image: {_box(r)} starts above y=0",
        ),
        _pair(
            "box_inside_image.x2",
            "width",
            "x2",
            ">=",
            "box right edge x2 <= image width (inside the image)",
            lambda r: (
                f"box outside the image: {_box(r)} ends at x2={_fmt(r['x2'])}, beyond the image "
                f"width {r['width']}"
            ),
        ),
        _pair(
            "box_inside_image.y2",
            "height",
            "y2",
            ">=",
            "box bottom edge y2 <= image height (inside the image)",
            lambda r: (
                f"box outside the image: {_box(r)} ends at y2={_fmt(r['y2'])}, beyond the image "
                f"height {r['height']}"
            ),
        ),
        _pair(
            "box_positive_area.x",
            "x2",
            "x1",
            ">",
            "box has positive width (x2 > x1)",
            lambda r: f"zero-area box: {_box(r)} has zero or negative width (x2 <= x1)",
        ),
        _pair(
            "box_positive_area.y",
            "y2",
            "y1",
            ">",
            "box has positive height (y2 > y1)",
            lambda r: f"zero-area box: {_box(r)} has zero or negative height (y2 <= y1)",
        ),
        _in_set(
            "polygon_four_points",
            "poly_values",
            [8],
            "oriented box has 4 points (8 numbers)",
            lambda r: f"invalid polygon: {_fmt(r['poly_values'])} numbers instead of 8",
        ),
        _at_least(
            "polygon_area",
            "poly_area",
            0,
            "oriented box has a non-zero, finite area",
            strict=True,
            detail=lambda r: (
                f"invalid polygon: {[round(float(v), 2) for v in r['poly']]} has zero area"
            ),
        ),
    ]
    present = [d for d in DATASETS if d in set(frame["dataset"].dropna().unique())]
    req = list(required_splits)
    if present and req:
        splits = [f"{ds}/{s}" for ds in present for s in req]
        rules += [
            _contains(
                rule_id,
                column,
                splits,
                f"every dataset has {noun} in each of the splits {', '.join(req)}",
                _empty_split(noun),
            )
            for rule_id, column, noun in (
                ("split_not_empty", "dataset_split", "images"),
                ("split_has_objects", "object_split", "objects"),
            )
        ]
    expected = []
    for ds in present:
        seen = set(frame.loc[frame["dataset"] == ds, "class_name"].dropna().unique())
        wanted = (seen | set((train_classes or {}).get(ds, ()))) & set(DATASETS[ds].class_names)
        expected += [f"{ds}/{c}" for c in wanted]
    if expected:
        rules.append(
            _contains(
                "train_classes",
                "train_class",
                expected,
                "every class has at least one object in the train split",
                lambda v: "{} class {!r} has no object in the train split".format(*v.split("/", 1)),
            )
        )
    return rules


# ----------------------------------------------------------------------------- image rules


def prepare_images(facts: pd.DataFrame) -> pd.DataFrame:
    """Image facts plus ``modality/channels`` and ``modality/dtype`` keys."""
    out = facts.copy()
    channels = out["channels"].astype("Int64")
    out["modality_channels"] = _key(out["modality"], channels)
    out["modality_dtype"] = _key(out["modality"], out["dtype"])
    return out


def image_location(row: pd.Series) -> str:
    """Where an image fact comes from: ``path (image_id)``."""
    return f"{row['path']} ({row['image_id']})"


def _or(values: Sequence[Any]) -> str:
    return " or ".join(map(str, values))


def _per_modality(
    rule_id: str,
    column: str,
    allowed: dict[str, list[Any]],
    what: str,
    detail: Callable[[pd.Series], str],
) -> Rule:
    """An image rule: the ``modality/value`` key of ``column`` is one of the ``allowed`` values of
    its modality (listed in the description)."""
    return _in_set(
        rule_id,
        column,
        [f"{m}/{v}" for m in MODALITIES for v in allowed[m]],
        f"{what} (" + "; ".join(f"{m}: {_or(allowed[m])}" for m in MODALITIES) + ")",
        detail,
        table="images",
    )


def image_rules(
    channels: Mapping[Any, Sequence[int]],
    dtypes: Mapping[Any, Sequence[str]],
    min_std: float,
) -> list[Rule]:
    """The image suite over :func:`prepare_images` facts; ``channels`` and ``dtypes``: modality
    name -> the values allowed (``validation.channels`` / ``validation.dtypes``)."""
    # a modality left out of the params is not constrained
    allowed_c: dict[str, list[int]] = {
        m: [int(c) for c in channels.get(m) or (1, 2, 3, 4)] for m in MODALITIES
    }
    allowed_d: dict[str, list[str]] = {
        m: [str(d) for d in dtypes.get(m) or ANY_DTYPE] for m in MODALITIES
    }
    size = lambda r: (  # noqa: E731
        f"decoded size {_fmt(r['file_width'])}x{_fmt(r['file_height'])} but the manifest says "
        f"{_fmt(r['expected_width'])}x{_fmt(r['expected_height'])} (width/height + 2 x crop)"
    )
    return [
        _in_set(
            "image_content_unchanged",
            "content_ok",
            [True],
            "the image file's bytes are those recorded in the manifest (sha256)",
            lambda r: (
                f"{content_changed(r['sha256'], r['expected_sha256'])} "
                "(re-import, or restore the file)"
            ),
            table="images",
        ),
        _in_set(
            "image_exists",
            "exists",
            [True],
            "the image file exists",
            lambda r: "missing image: file not found",
            table="images",
        ),
        _in_set(
            "image_decodes",
            "decodes",
            [True],
            "the image file decodes completely (not truncated or corrupt)",
            lambda r: f"image does not decode (truncated or corrupt): {r['error']}",
            table="images",
        ),
        _pair(
            "image_size_matches.width",
            "file_width",
            "expected_width",
            "==",
            "decoded width equals the manifest's width + 2 x crop_x",
            size,
            table="images",
        ),
        _pair(
            "image_size_matches.height",
            "file_height",
            "expected_height",
            "==",
            "decoded height equals the manifest's height + 2 x crop_y",
            size,
            table="images",
        ),
        _per_modality(
            "image_channels",
            "modality_channels",
            allowed_c,
            "channels fit the modality",
            lambda r: (
                f"wrong channel count: {int(r['channels'])} (mode {r['mode']}), but "
                f"{r['modality']} images must have {_or(allowed_c.get(r['modality'], []))}"
            ),
        ),
        _per_modality(
            "image_dtype",
            "modality_dtype",
            allowed_d,
            "pixel dtype fits the modality",
            lambda r: (
                f"wrong dtype: pixels are {r['dtype']}, but {r['modality']} images must be "
                + _or(allowed_d.get(r["modality"], []))
            ),
        ),
        _at_least(
            "image_not_constant",
            "std",
            float(min_std),
            f"the image is not constant (pixel std > {min_std:g})",
            strict=True,
            detail=lambda r: f"constant image: pixel std {r['std']:.3g} <= {min_std:g}",
            table="images",
        ),
    ]


# ------------------------------------------------------------------------ pandas evaluation


@dataclass
class RuleOutcome:
    """What one rule found, whichever engine evaluated it."""

    rule: Rule
    success: bool
    count: int  # offending rows, or missing values for aggregate rules
    rows: list[int] = field(default_factory=list)  # offending row positions (the first ones)
    missing: list[Any] = field(default_factory=list)  # aggregate rules
    error: str | None = None  # the check itself could not run


def run_pandas(rules: Sequence[Rule], frame: pd.DataFrame, limit: int = 20) -> list[RuleOutcome]:
    """Evaluate ``rules`` with plain vectorised pandas (the reference implementation)."""
    out = []
    for rule in rules:
        if rule.kind == "row":
            idx = np.flatnonzero(rule.offending(frame).to_numpy())
            out.append(RuleOutcome(rule, len(idx) == 0, len(idx), idx[:limit].tolist()))
        else:
            missing = rule.missing_values(frame)
            out.append(RuleOutcome(rule, not missing, len(missing), missing=list(missing)))
    return out
