"""What the babelrs flows share (``babelrs-retrain`` in flows/retrain.py, ``babelrs-ablation`` in
flows/ablation.py):

* the options of a task that runs stages (:func:`stage_task_options`): the tag ``gpu`` when one of
  them trains (the tag concurrency limit ``gpu`` counts those task runs across flows and workers),
  retries for transient errors only (:func:`retry_transient`), and the stages' timeouts;
* library logs (babelrs_core, mmengine, mlflow) in the task log (:func:`library_logs_to_task_log`);
* flow-run names that say which params keys were overridden (:func:`flow_run_namer`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from babelrs_core.config import ConfigError, Params, load_params
from babelrs_core.errors import BabelrsError
from babelrs_core.pipeline.specs import StageSpec

#: Errors from outside babelrs that a retry cannot fix (ours say so in ``transient``).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError)
#: loggers whose records reach the task log (besides print, which log_prints routes)
LIBRARY_LOGGERS = ("babelrs_core", "mmengine", "mlflow")
#: seconds between a failed attempt and its retry
RETRY_DELAY_S = 5


def retry_transient(task_: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failure only when it can be transient (never bad
    params or bad data)."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BabelrsError):
        return exc.transient
    return not isinstance(exc, PERMANENT_ERRORS)


def stage_task_options(specs: Sequence[StageSpec], params: Params) -> dict[str, Any]:
    """``Task.with_options`` arguments of a task that runs ``specs`` in order (one pipeline stage,
    or an ablation job's fine-tuning and evaluation): tags ``babelrs`` and, when one of them
    trains, ``gpu``; the most retries of theirs, only for transient errors, 5 s apart; and the sum
    of their ``orchestration.stage_timeout_s`` (no timeout when one of them has none)."""
    timeouts = [params.orchestration.stage_timeout_s.get(s.name) for s in specs]
    return {
        "tags": ["babelrs", *(["gpu"] if any(s.gpu for s in specs) else [])],
        "retries": max(s.retries for s in specs),
        "retry_condition_fn": retry_transient,
        "retry_delay_seconds": RETRY_DELAY_S,
        "timeout_seconds": None if None in timeouts else sum(t for t in timeouts if t),
    }


class _TaskLogHandler(logging.Handler):
    """Forward library log records to the Prefect run logger of the task."""

    def __init__(self, target: logging.Logger | logging.LoggerAdapter) -> None:
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.log(record.levelno, "%s: %s", record.name, record.getMessage())


@contextmanager
def library_logs_to_task_log() -> Iterator[None]:
    """INFO and above of :data:`LIBRARY_LOGGERS` go to the task log while the block runs."""
    handler = _TaskLogHandler(get_run_logger())
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def run_name(prefix: str, overrides: dict[str, Any] | None, seed: int | str) -> str:
    """``<prefix>-<last key><value>...-seed<seed>`` from the overridden params keys, e.g.
    ``("retrain", {"finetune.iters": 1500}, 0)`` -> ``retrain-iters1500-seed0``."""
    parts = [prefix]
    for key, value in sorted((overrides or {}).items()):
        if key == "seed":
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, separators=(",", ":"), default=str)
        else:
            text = Path(value).name if isinstance(value, str) and "/" in value else str(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}{text}".replace(" ", "")[:32])
    return "-".join([*parts, f"seed{seed}"])


def flow_run_namer(prefix: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable for a flow with the parameters ``params_path`` and
    ``overrides``: :func:`run_name` of the flow run's parameters."""

    def name() -> str:
        parameters = flow_run.get_parameters()
        overrides = parameters.get("overrides") or {}
        try:
            seed = load_params(Path(parameters.get("params_path", "params.yaml")), overrides).seed
        except (ConfigError, OSError):
            seed = overrides.get("seed", "?")
        return run_name(prefix, overrides, seed)

    return name
