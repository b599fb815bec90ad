"""The Great Expectations runner: one GX 1.x suite per table (ephemeral context, pandas data
source, whole-dataframe batch, ``ExpectationSuite`` + ``ValidationDefinition`` run by a
``Checkpoint`` whose ``UpdateDataDocsAction`` renders the result into the local Data Docs site).

The rules it runs are :mod:`babelrs_core.data.validation.rules`; what each rule found comes back
as a :class:`~babelrs_core.data.validation.rules.RuleOutcome`, as from the pandas reference.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from babelrs_core.data.validation.rules import Rule, RuleOutcome, gx_frame

DATA_DOCS_SITE = "babelrs"


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
    from great_expectations.checkpoint.actions import UpdateDataDocsAction, ValidationAction
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
        actions: list[ValidationAction] = []
        if data_docs_dir is not None:
            actions.append(UpdateDataDocsAction(name="data_docs", site_names=[DATA_DOCS_SITE]))
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
                    actions=actions,
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
    out: list[int] = []
    for item in found:
        if isinstance(item, dict):
            v = item.get("_row")
            out.extend(int(x) for x in (v if isinstance(v, list) else [v]) if x is not None)
        else:
            out.append(int(item))
    return out
