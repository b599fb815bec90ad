"""The data validation stage: Great Expectations suites over the manifest and every image.

What runs (rules in :mod:`babelrs_core.data.validation_rules`, plain words in docs/data.md):

* **manifest suite** (GX 1.x, ephemeral context, pandas data source, whole-dataframe batch,
  ``ExpectationSuite`` + ``ValidationDefinition`` run by a ``Checkpoint`` whose
  ``UpdateDataDocsAction`` renders the result into the local Data Docs site): unique
  ``image_id + object_index``, no nulls where forbidden, known dataset / modality / split, class
  in the dataset's label space, label consistent with the class, box inside the image with
  positive area, polygon with 4 points and non-zero area, one image per ``image_id``, required
  splits non-empty (images and objects), every class present in train;
* **image suite** over one row of facts per image (:func:`image_facts`, decoded here with a small
  thread pool): file exists and decodes completely, decoded size equals the manifest, channels and
  dtype expected for the modality, not a constant image;
* with raw dataset folders (``babelrs data validate --raw``) also the **format check**: the real
  format readers run file by file and every malformed annotation file is reported with
  ``file:line: problem``; the rows of the good files are then validated like a manifest.

The report lists each failing check with the offending files / rows (first
``validation.max_examples``) in plain words: ``report.json``, ``report.md`` and the small
``summary.json`` (DVC metrics) under ``validation.out_dir``; GX Data Docs HTML go to
``validation.data_docs_dir``. A failure raises :class:`DataValidationError` *after* writing the
report, so ``dvc repro`` stops before anything trains and the CLI exits non-zero.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from babelrs_core.concepts import DATASETS
from babelrs_core.config import Importers, Params, Validation
from babelrs_core.data.formats import FormatError, get_reader
from babelrs_core.data.manifest import (
    ManifestRow,
    images,
    read_manifest,
    to_frame,
)
from babelrs_core.data.validation_rules import (
    Rule,
    RuleOutcome,
    gx_frame,
    image_location,
    image_rules,
    manifest_location,
    manifest_rules,
    prepare_images,
    prepare_manifest,
    run_pandas,
)
from babelrs_core.errors import BadInputError
from babelrs_core.io.atomic import atomic_dir, write_json, write_text
from babelrs_core.io.hashing import file_sha256

#: The pseudo check under which malformed annotation files are reported.
FORMAT_CHECK = "annotation_format"
DATA_DOCS_SITE = "babelrs"


class DataValidationError(BadInputError):
    """The data failed validation; ``report`` says what, ``str()`` is the human summary."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.markdown())


@dataclass
class Failure:
    """One failing check with its offending files / rows in plain words."""

    check: str
    table: str  # manifest | images | raw
    expectation: str  # GX expectation type (or the importer for format errors)
    description: str
    count: int  # offending rows, files or missing values
    examples: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Outcome of one validation run."""

    source: str  # the manifest file, or the raw dataset folders
    passed: bool
    rows: int
    images: int
    objects: int
    checks: int  # checks evaluated (format check included when raw data was given)
    failures: list[Failure]
    seconds: dict[str, float] = field(default_factory=dict)
    data_docs: str | None = None
    max_examples: int = 20

    def add_check(self, failure: Failure | None) -> None:
        """Count one more check run outside the GX suites; ``failure`` when it failed."""
        self.checks += 1
        if failure is not None:
            self.failures.append(failure)
            self.passed = False

    def summary(self) -> dict[str, Any]:
        """Small, deterministic dict (DVC metrics): no timings, no paths."""
        return {
            "passed": self.passed,
            "rows": self.rows,
            "images": self.images,
            "objects": self.objects,
            "checks": self.checks,
            "failed_checks": len(self.failures),
            "failures": {f.check: f.count for f in self.failures},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.summary(),
            "failures": [asdict(f) for f in self.failures],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "data_docs": self.data_docs,
        }

    def markdown(self) -> str:
        """Human summary: status, counts, then each failing check with its examples."""
        status = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Data validation {status}: {self.source}",
            "",
            f"{self.rows} rows, {self.images} images, {self.objects} objects; "
            f"{self.checks} checks, {len(self.failures)} failed.",
        ]
        for f in self.failures:
            lines += ["", f"## FAILED {f.check}: {f.description}", ""]
            what = "value(s) missing" if f.table == "aggregate" else "offending row(s)/file(s)"
            shown = len(f.examples)
            more = f", first {shown} listed" if shown < f.count else ""
            lines.append(f"{f.count} {what}{more} ({f.table}, {f.expectation}):")
            lines += [f"- {e}" for e in f.examples]
        if self.data_docs:
            lines += ["", f"Data Docs: {self.data_docs}"]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- image facts

FACT_COLUMNS = (
    "exists",
    "decodes",
    "error",
    "file_width",
    "file_height",
    "mode",
    "channels",
    "dtype",
    "std",
    "sha256",
)


def inspect_image(path: str, crop_x: int, crop_y: int, width: int, height: int) -> dict[str, Any]:
    """Facts about one image file: exists, decodes completely, size, bands, dtype, pixel std
    (over the manifest's window, e.g. inside DroneVehicle's white border). Never raises."""
    facts: dict[str, Any] = dict.fromkeys(FACT_COLUMNS)
    p = Path(path)
    facts["exists"] = p.is_file()
    if not facts["exists"]:
        facts["error"] = "image file not found"
        return facts
    try:
        facts["sha256"] = file_sha256(p)
    except OSError as exc:
        facts["error"] = str(exc)
    try:
        with Image.open(p) as im:
            im.load()  # a full decode: truncated files fail here
            facts["file_width"], facts["file_height"] = im.size
            facts["mode"] = im.mode
            facts["channels"] = len(im.getbands())
            arr = np.asarray(im)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBomb...)
        facts["decodes"] = False
        facts["error"] = str(exc) or type(exc).__name__
        return facts
    facts["decodes"] = True
    facts["dtype"] = str(arr.dtype)
    x0, y0 = max(int(crop_x), 0), max(int(crop_y), 0)
    window = arr[y0 : y0 + max(int(height), 0), x0 : x0 + max(int(width), 0)]
    facts["std"] = float(window.std()) if window.size else 0.0
    return facts


def image_facts(frame: pd.DataFrame, workers: int = 2, progress: bool = False) -> pd.DataFrame:
    """One row per image of ``frame`` (absolute paths) with :func:`inspect_image`'s facts and
    the expected file size (``width + 2 * crop_x`` x ``height + 2 * crop_y``: a crop is a border
    on every side, as DroneVehicle's)."""
    imgs = images(frame) if len(frame) else frame.iloc[0:0]
    cols = ["path", "crop_x", "crop_y", "width", "height"]
    args = [
        (str(p), _int(cx), _int(cy), _int(w), _int(h))
        for p, cx, cy, w, h in imgs[cols].itertuples(index=False)
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        stream = pool.map(lambda a: inspect_image(*a), args)
        facts = list(tqdm(stream, total=len(args), desc="check images", disable=not progress))
    out = imgs[["image_id", "dataset", "modality", "split", *cols]].reset_index(drop=True)
    table = pd.DataFrame(facts, columns=list(FACT_COLUMNS))
    for c in FACT_COLUMNS:
        out[c] = table[c]
    for c in ("file_width", "file_height", "channels", "std"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    out["expected_width"] = pd.to_numeric(out["width"]) + 2 * pd.to_numeric(out["crop_x"])
    out["expected_height"] = pd.to_numeric(out["height"]) + 2 * pd.to_numeric(out["crop_y"])
    # content unchanged since the manifest was written: None (not checked) when the manifest has
    # no hash for the image or the file is missing (image_exists reports that)
    expected = (
        frame.drop_duplicates("image_id").set_index("image_id")["sha256"]
        if "sha256" in frame and len(frame)
        else pd.Series(dtype=object)
    )
    out["expected_sha256"] = [expected.get(i) for i in out["image_id"]]
    out["content_ok"] = [
        None if not isinstance(want, str) or not isinstance(got, str) else got == want
        for got, want in zip(out["sha256"], out["expected_sha256"], strict=True)
    ]
    out.index.name = "_row"
    return out


def _int(v: Any) -> int:
    return 0 if v is None or pd.isna(v) else int(v)


# ---------------------------------------------------------------------------------- raw data


def read_raw(
    roots: Mapping[str, str | os.PathLike[str]], importers: Importers
) -> tuple[pd.DataFrame, list[FormatError]]:
    """Run the format readers over raw dataset folders, file by file where the format has one
    label file per image (DOTA, DroneVehicle) and split by split for SARDet's COCO JSON.

    Returns the rows of every file that parsed (absolute image paths) and every problem found;
    a broken file costs only its own rows.
    """
    rows: list[ManifestRow] = []
    problems: list[FormatError] = []

    def take(chunk: Iterable[ManifestRow]) -> None:
        try:
            rows.extend(list(chunk))  # all rows of one file, or none
        except FormatError as exc:
            problems.append(exc)

    for name, root in roots.items():
        root = Path(root).resolve()
        try:
            units = list(_units(name, root, importers))
        except FormatError as exc:
            problems.append(exc)
            continue
        for unit in units:
            take(unit)
    frame = to_frame(rows)
    return frame, problems


def _units(name: str, root: Path, importers: Importers) -> Iterable[Iterable[ManifestRow]]:
    """Lazy per-file (or per-split) row streams of one dataset folder."""
    from babelrs_core.data.formats import dota, dronevehicle, sardet
    from babelrs_core.data.formats._common import pair_by_stem

    if not root.is_dir():
        raise FormatError(root, None, f"{name} dataset folder not found")
    if name == "dota":
        splits = dota.discover_splits(root)
        if not splits:
            raise FormatError(root, None, "no {train,val,test}/images/ with a label folder")
        for split in splits:
            d = root / split
            try:
                pairs = pair_by_stem(d / dota.IMAGES, dota.label_dir(d), dota.LABEL_SUFFIX)
            except FormatError as exc:
                yield _raiser(exc)
                continue
            for stem, image, label in pairs:
                yield dota.read_file(root, split, stem, image, label, importers)
    elif name == "dronevehicle":
        modalities = list(dict.fromkeys(importers.dronevehicle_modalities))
        pairs_found = dronevehicle.discover_splits(root, modalities)
        if not pairs_found:
            raise FormatError(root, None, "no DroneVehicle split folders found")
        for split, modality in pairs_found:
            img_dir, label_dir = dronevehicle.folders(root, split, modality)
            try:
                pairs = pair_by_stem(img_dir, label_dir, dronevehicle.LABEL_SUFFIX)
            except FormatError as exc:
                yield _raiser(exc)
                continue
            for stem, image, label in pairs:
                yield dronevehicle.read_file(root, split, modality, stem, image, label, importers)
    elif name == "sardet":
        splits = sardet.discover_splits(root)
        if not splits:
            raise FormatError(root, None, "no Annotations/{train,val,test}.json found")
        for split in splits:
            path = sardet.annotation_file(root, split)
            yield sardet.read_split(root, split, path, importers)
    else:  # a reader added later: one unit for the whole folder
        yield get_reader(name)(root, importers)


def _raiser(exc: FormatError) -> Iterable[ManifestRow]:
    raise exc
    yield  # pragma: no cover


# ------------------------------------------------------------------------------- GX runner


def _gx_context(data_docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if data_docs_dir is not None:
        sites[DATA_DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(Path(data_docs_dir).resolve()),  # GX wants it absolute
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_gx(
    tables: Mapping[str, tuple[pd.DataFrame, Sequence[Rule]]],
    limit: int = 20,
    data_docs_dir: Path | None = None,
) -> list[RuleOutcome]:
    """Run one GX suite per table (name -> (frame, rules)) and return what each rule found.

    Each suite runs through a GX Checkpoint (``babelrs-<table>``: a pandas dataframe batch is a
    run-time parameter of the checkpoint, so one checkpoint per table), all under one GX run id;
    with ``data_docs_dir`` the checkpoints carry an ``UpdateDataDocsAction`` that renders each
    validation result and the suite into the local Data Docs site there (``index.html``).

    Offending rows come back as positions in the frame (its index is a RangeIndex named
    ``_row``; ``exclude_unexpected_values`` keeps GX from building per-row dicts, which is
    quadratic-looking slow when many rows fail).
    """
    import datetime as dt

    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    outcomes: list[RuleOutcome] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        ctx = _gx_context(data_docs_dir)
        source = ctx.data_sources.add_pandas("babelrs")
        result_format = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": max(1, limit),
            "exclude_unexpected_values": True,
        }
        actions = [UpdateDataDocsAction(name="data_docs", site_names=[DATA_DOCS_SITE])]
        run_id = RunIdentifier(run_name="babelrs-validate", run_time=dt.datetime.now(dt.UTC))
        for name, (frame, rules) in tables.items():
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            # expectations go in before the suite is added: adding them one by one to a stored
            # suite re-serialises the whole suite each time (quadratic, seconds for 50 rules)
            expectations = [rule.expectation() for rule in rules]
            suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
            definition = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch, suite=suite)
            )
            checkpoint = ctx.checkpoints.add(
                gx.Checkpoint(
                    name=f"babelrs-{name}",
                    validation_definitions=[definition],
                    actions=actions if data_docs_dir is not None else [],
                    result_format=result_format,
                )
            )
            frame = gx_frame(frame if frame.index.name == "_row" else _row_indexed(frame), rules)
            run = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
            (result,) = run.run_results.values()
            by_id = {r.id: r for r in rules}
            for res in result.results:
                outcomes.append(_outcome(by_id[res.expectation_config.meta["check"]], res, limit))
    return outcomes


def _row_indexed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True)
    out.index.name = "_row"
    return out


def _outcome(rule: Rule, res: Any, limit: int) -> RuleOutcome:
    info = res.exception_info or {}
    if info.get("raised_exception"):
        msg = info.get("exception_message") or "unknown error"
        return RuleOutcome(rule, False, 0, error=f"the check could not run: {msg}")
    r = res.result or {}
    if rule.kind == "row":
        return RuleOutcome(
            rule,
            bool(res.success),
            int(r.get("unexpected_count") or 0),
            _positions(r.get("partial_unexpected_index_list"))[:limit],
        )
    if rule.gx_type == "ExpectTableRowCountToBeBetween":
        missing = [] if res.success else ["rows"]
    else:
        missing = sorted(r.get("partial_missing_list") or [], key=str)
    return RuleOutcome(rule, bool(res.success), len(missing), missing=missing)


def _positions(found: Any) -> list[int]:
    """Row positions from GX's partial_unexpected_index_list (dict or list of dicts)."""
    if not found:
        return []
    if isinstance(found, dict):
        values = found.get("_row", [])
        return [int(v) for v in (values if isinstance(values, list) else [values])]
    out = []
    for item in found:
        if isinstance(item, dict):
            v = item.get("_row")
            out.extend(int(x) for x in (v if isinstance(v, list) else [v]) if x is not None)
        else:
            out.append(int(item))
    return out


# ------------------------------------------------------------------------------ orchestration


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
    train_classes: dict[str, list[str]] | None = None,
    source: str = "manifest",
    format_errors: Sequence[FormatError] | None = None,
    data_docs_dir: Path | None = None,
    progress: bool = False,
    engine: str = "gx",
) -> ValidationReport:
    """Validate a manifest frame (absolute paths) and its images; never raises for bad data.

    ``format_errors``: what :func:`read_raw` found (None: the raw files were not checked).

    ``engine="pandas"`` evaluates the same rules with the plain pandas reference instead of GX
    (no Data Docs then); the tests use it to check that both agree.
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    prepared = prepare_manifest(frame)
    tables: dict[str, tuple[pd.DataFrame, list[Rule]]] = {
        "manifest": (prepared, manifest_rules(prepared, cfg.required_splits, train_classes))
    }
    facts = None
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


def format_failure(errors: Sequence[FormatError], limit: int) -> Failure:
    """The malformed annotation files, as one failing check."""
    return Failure(
        check=FORMAT_CHECK,
        table="raw",
        expectation="format readers (babelrs_core.data.formats)",
        description="annotation files follow their dataset's release format",
        count=len(errors),
        examples=[_short(str(e)) for e in errors[:limit]],
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
        examples.append(f"{_short(where(row))}: {what}")
    return Failure(rule.id, rule.table, rule.gx_type, rule.description, outcome.count, examples)


def _short(text: str) -> str:
    """Paths under the working directory are shown relative to it."""
    cwd = str(Path.cwd()) + os.sep
    return text.replace(cwd, "")


def write_report(report: ValidationReport, out_dir: Path) -> None:
    """``report.json``, ``report.md`` and ``summary.json`` (metrics) under ``out_dir``."""
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report.to_dict())
    write_text(out_dir / "report.md", report.markdown())
    write_json(out_dir / "summary.json", report.summary())


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
