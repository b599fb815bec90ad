"""Pipeline runners (raster-vision style): interchangeable ways to run the stage list.

``local`` runs the stages in order in this process; other runners are plugins registered under the
entry-point group ``babelrs.runners`` (this package registers ``prefect``: the ``babelrs-retrain``
flow of ``flows/retrain.py``), so the core never imports an orchestrator. Every runner reaches each
stage through :func:`~babelrs_core.pipeline.runner.execute_stage` and has the signature of
:func:`run_local`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, cast

from babelrs_core.config import ConfigError, Params, flatten, load_params
from babelrs_core.pipeline.runner import execute_stage, lineage_tags
from babelrs_core.pipeline.specs import PIPELINE, stage
from babelrs_core.tracking import Tracker

GROUP = "babelrs.runners"
PARENT_RUN_NAME = "babelrs-retrain"


class PipelineRunner(Protocol):
    """What a runner is called with; it returns the stage results by stage name (plus
    ``mlflow_parent_run_id``)."""

    def __call__(
        self,
        params_path: str = "params.yaml",
        overrides: dict[str, Any] | None = None,
        stages: list[str] | None = None,
        track: bool = True,
    ) -> dict[str, Any]: ...


@contextmanager
def parent_run(params: Params, tracker: Tracker | None, runner: str) -> Iterator[str | None]:
    """The pipeline's parent MLflow run (all params, lineage tags), finished FAILED when the
    block raises; yields None when untracked."""
    if tracker is None or not tracker.enabled:
        yield None
        return
    parent = tracker.start(PARENT_RUN_NAME, lineage_tags(params, runner))
    ok = False
    try:
        tracker.log_params(parent, flatten(params))
        yield parent
        ok = True
    finally:
        tracker.finish(parent, ok)


def log_headline(tracker: Tracker | None, parent: str | None, results: dict[str, Any]) -> None:
    """The run's headline numbers (overall and per-dataset scores, gate) on the parent run."""
    from babelrs_core.summary import headline_metrics

    if tracker is not None and parent is not None:
        with tracker.metric_sink(parent) as sink:
            sink.log(0, headline_metrics(results))


def run_local(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run the stages (all, or ``stages``) in order in this process, under one parent MLflow
    run that gets the headline numbers."""
    params = load_params(Path(params_path), overrides)
    selected = [stage(n) for n in stages] if stages else PIPELINE
    tracker = Tracker.from_params(params) if track else None
    results: dict[str, Any] = {}
    with parent_run(params, tracker, "local") as parent:
        for spec in selected:
            results[spec.name] = execute_stage(
                spec, params, tracker=tracker, runner="local", parent_run_id=parent
            )
        log_headline(tracker, parent, results)
    results["mlflow_parent_run_id"] = parent
    return results


def runner_names() -> list[str]:
    """``local`` and the installed plugins."""
    return ["local", *sorted(ep.name for ep in entry_points(group=GROUP))]


def plugin(group: str, name: str, what: str, builtin: Sequence[str] = ()) -> Any:
    """The entry point ``name`` of ``group`` (a ``what``), loaded; a clear error lists the
    installed ones (``builtin`` names are listed first)."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    names = [*builtin, *sorted(ep.name for ep in entry_points(group=group))]
    raise ConfigError(
        f"no {what} {name!r}; installed: {', '.join(names) or 'none'} (plugins are entry points "
        f"of the group {group!r}: `make setup` reinstalls the package's own)"
    )


def get_runner(name: str) -> PipelineRunner:
    """The runner called ``name``; a clear error lists the installed ones."""
    if name == "local":
        return run_local
    return cast(PipelineRunner, plugin(GROUP, name, "pipeline runner", builtin=["local"]))
