"""The data validation stage: Great Expectations suites over the manifest and every image.

What runs (rules in :mod:`babelrs_core.data.validation.rules`, plain words in docs/data.md):

* **manifest suite** (GX, :mod:`~babelrs_core.data.validation.suites`): unique
  ``image_id + object_index``, no nulls where forbidden, known dataset / modality / split, class
  in the dataset's label space, label consistent with the class, box inside the image with
  positive area, polygon with 4 points and non-zero area, one image per ``image_id``, required
  splits non-empty (images and objects), every class present in train;
* **image suite** over one row of facts per image (:mod:`~babelrs_core.data.validation.images`):
  file exists and decodes completely, bytes unchanged since import (sha256), decoded size equals
  the manifest, channels and dtype expected for the modality, not a constant image;
* with raw dataset folders (``babelrs data validate --raw``) also the **format check**
  (:mod:`~babelrs_core.data.validation.raw`);
* the checks outside the GX suites: the captions table written with the manifest
  (:func:`babelrs_core.data.captions.captions_failure`) and the shards made from it
  (:func:`babelrs_core.data.integrity.shard_failure`).

The report (:mod:`~babelrs_core.data.validation.report`) lists each failing check with the
offending files / rows; GX Data Docs HTML go to ``validation.data_docs_dir``. A failure raises
:class:`~babelrs_core.data.validation.report.DataValidationError` *after* writing the report, so
``dvc repro`` stops before anything trains and the CLI exits non-zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from babelrs_core.concepts import DATASETS
from babelrs_core.config import Params, Validation
from babelrs_core.data.formats import FormatError
from babelrs_core.data.manifest import read_manifest
from babelrs_core.data.validation.images import image_facts
from babelrs_core.data.validation.raw import format_failure, read_raw
from babelrs_core.data.validation.report import (
    DataValidationError,
    Failure,
    ValidationReport,
    short,
    write_report,
)
from babelrs_core.data.validation.rules import (
    Rule,
    RuleOutcome,
    image_location,
    image_rules,
    manifest_location,
    manifest_rules,
    prepare_images,
    prepare_manifest,
    run_pandas,
)
from babelrs_core.data.validation.suites import run_gx
from babelrs_core.io.atomic import atomic_dir


def declared_train_classes(params: Params, mode: str) -> dict[str, list[str]]:
    """Classes that must have a train object besides the observed ones, per
    ``validation.train_classes``."""
    if mode == "label_space":
        return {ds: list(info.class_names) for ds, info in DATASETS.items()}
    if mode == "soi_mini":
        return {ds: list(getattr(params.soi_mini, ds).classes) for ds in DATASETS}
    return {}


def validate_frame(
    frame: pd.DataFrame,
    cfg: Validation,
    train_classes: Mapping[str, Sequence[str]] | None = None,
    source: str = "manifest",
    format_errors: Sequence[FormatError] | None = None,
    data_docs_dir: Path | None = None,
    progress: bool = False,
    engine: str = "gx",
) -> ValidationReport:
    """Validate a manifest frame (absolute paths) and its images; never raises for bad data.

    ``format_errors``: what :func:`~babelrs_core.data.validation.raw.read_raw` found (None: the
    raw files were not checked).

    ``engine="pandas"`` evaluates the same rules with the plain pandas reference instead of GX
    (no Data Docs then); the tests use it to check that both agree.
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    prepared = prepare_manifest(frame)
    tables: dict[str, tuple[pd.DataFrame, list[Rule]]] = {
        "manifest": (prepared, manifest_rules(prepared, cfg.required_splits, train_classes))
    }
    if cfg.image_checks:
        facts = prepare_images(image_facts(frame, cfg.workers, progress))
        tables["images"] = (facts, image_rules(cfg.channels, cfg.dtypes, cfg.min_std))
    seconds["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    if engine == "gx":
        outcomes = run_gx(tables, cfg.max_examples, data_docs_dir)
    else:
        outcomes = [
            o for f, rules in tables.values() for o in run_pandas(rules, f, cfg.max_examples)
        ]
    seconds[engine] = time.perf_counter() - t

    failures = [_failure(o, tables, source, cfg.max_examples) for o in outcomes if not o.success]
    if format_errors:
        failures.insert(0, format_failure(format_errors, cfg.max_examples))
    n_objects = int((frame["object_index"] >= 0).sum()) if len(frame) else 0
    return ValidationReport(
        source=source,
        passed=not failures,
        rows=len(frame),
        images=int(frame["image_id"].nunique()) if len(frame) else 0,
        objects=n_objects,
        checks=len(outcomes) + (1 if format_errors is not None else 0),
        failures=failures,
        seconds=seconds,
        data_docs=str(data_docs_dir / "index.html") if data_docs_dir is not None else None,
        max_examples=cfg.max_examples,
    )


def _failure(
    outcome: RuleOutcome,
    tables: Mapping[str, tuple[pd.DataFrame, Sequence[Rule]]],
    source: str,
    limit: int,
) -> Failure:
    rule = outcome.rule
    if outcome.error:
        return Failure(rule.id, rule.table, rule.gx_type, rule.description, 0, [outcome.error])
    if rule.kind == "aggregate":
        detail = rule.detail or (lambda v: f"missing {v!r}")
        examples = [f"{source}: {detail(v)}" for v in outcome.missing[:limit]]
        return Failure(
            rule.id, "aggregate", rule.gx_type, rule.description, outcome.count, examples
        )
    frame = tables[rule.table][0]
    where = image_location if rule.table == "images" else manifest_location
    examples = []
    for pos in outcome.rows[:limit]:
        row = frame.iloc[pos]
        what = rule.detail(row) if rule.detail else "offends the rule"
        examples.append(f"{short(where(row))}: {what}")
    return Failure(rule.id, rule.table, rule.gx_type, rule.description, outcome.count, examples)


def run_validation(
    params: Params,
    manifest: Path | None = None,
    out_dir: Path | None = None,
    raw_roots: Mapping[str, str | os.PathLike[str]] | None = None,
    progress: bool = False,
) -> ValidationReport:
    """The stage: validate the manifest (or the raw dataset folders in ``raw_roots``) and its
    images, write the report (and Data Docs), raise :class:`DataValidationError` on failure.

    A missing or unreadable manifest raises ``FileNotFoundError`` / ``ValueError`` as usual.
    """
    cfg = params.validation
    out_dir = Path(out_dir or cfg.out_dir)
    format_errors: list[FormatError] | None = None
    if raw_roots:
        frame, format_errors = read_raw(raw_roots, params.importers)
        source = ", ".join(str(r) for r in raw_roots.values())
    else:
        manifest = Path(manifest or params.paths.manifest)
        frame = read_manifest(manifest)
        source = str(manifest)
    classes = declared_train_classes(params, cfg.train_classes)
    docs_target = Path(cfg.data_docs_dir) if cfg.data_docs else None
    if docs_target is not None and out_dir != Path(cfg.out_dir):
        docs_target = out_dir / docs_target.name  # keep the docs beside a redirected report
    if docs_target is None:
        report = validate_frame(frame, cfg, classes, source, format_errors, None, progress)
    else:
        with atomic_dir(docs_target) as tmp:  # never a mix of two runs' pages
            report = validate_frame(frame, cfg, classes, source, format_errors, tmp, progress)
        report.data_docs = str(docs_target / "index.html")
    if not raw_roots:  # the captions table written with this manifest, if any
        from babelrs_core.config import captions_for
        from babelrs_core.data.captions import captions_failure

        captions = captions_for(params, manifest or params.paths.manifest)
        report.add_check(captions_failure(captions, frame, cfg.max_examples))
    shard_index = Path(params.shards.index)
    if not raw_roots and shard_index.is_file():  # the shards made from this data, if any
        from babelrs_core.data.integrity import shard_failure

        report.add_check(shard_failure(shard_index, cfg.max_examples))
    write_report(report, out_dir)
    if not report.passed:
        raise DataValidationError(report)
    return report
