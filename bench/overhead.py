"""Orchestration overhead: the ``babelrs-retrain`` flow against calling the stage functions.

Usage (from the repository root)::

    .venv/bin/python bench/overhead.py [--images 2] [--repeat 3] [--stages generate import]

On the same tiny params (SOI-mini with ``--images`` train images per dataset plus one val/test
image, every output in a temporary folder), in one process, after one untimed direct run (the
stages import their libraries lazily):

1. ``direct``: the stage functions of babelrs_core/stages.py called one after the other
   (no tracking, no Prefect);
2. ``tracked``: :func:`babelrs_core.pipeline.runner.execute_stage` with an MLflow tracker on a
   local SQLite store (what ``babelrs stage`` / ``dvc repro`` run), no Prefect: once creating the
   store, then ``--repeat`` times;
3. ``flow, first``: the flow with tracking on and an ephemeral Prefect server (no
   ``PREFECT_API_URL``), started by this call (fresh ``PREFECT_HOME``);
4. ``flow``: the flow ``--repeat`` times on new output paths (new cache keys: every task runs);
5. ``flow, cached``: the flow ``--repeat`` times on the paths of the last run of 4 (every task
   ``Cached``).

Prints the median wall time of each and its ratio to the direct median. The flow's stages show
progress bars (the flow runs them with ``progress=True``); the direct and tracked runs do not.
Every run writes new output folders, so no stage skips work because its output exists (except
the cached flow, by design).
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from babelrs_core.settings_env import NO_TELEMETRY_ENV, OFFLINE_ENV  # noqa: E402


def _isolate(home: Path) -> None:
    """A fresh ephemeral Prefect (own PREFECT_HOME), local MLflow store; set before importing
    prefect, which reads its settings at import."""
    for key in list(os.environ):
        if key.startswith(("PREFECT_", "MLFLOW_")):
            del os.environ[key]
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_LOGGING_LEVEL="WARNING",
        MPLBACKEND="Agg",
        **NO_TELEMETRY_ENV,
        **OFFLINE_ENV,
    )


def overrides(work: Path, images: int) -> dict:
    return {
        "soi_mini.sardet.splits": {"train": images, "test": 1},
        "soi_mini.dota.splits": {"train": images, "val": 1},
        "soi_mini.dronevehicle.splits": {"train": images, "test": 1},
        "paths.raw": str(work / "raw"),
        "paths.manifest": str(work / "manifest.parquet"),
        "tracking.store": str(work.parent / "mlflow"),
        "tracking.experiment": "bench-overhead",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2, help="train images per dataset")
    ap.add_argument("--stages", nargs="+", default=["generate", "import"])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row (median shown)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="babelrs-overhead-"))
    # removed at exit, after the ephemeral Prefect server (registered later, so stopped first)
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    _isolate(tmp / "prefect-home")
    os.chdir(ROOT)  # the task cache keys hash code paths relative to the repository root

    t_import = time.perf_counter()
    import prefect

    from babelrs_core.config import load_params
    from babelrs_core.pipeline import stage
    from babelrs_core.pipeline.runner import call_stage, execute_stage
    from babelrs_core.tracking import Tracker
    from flows.retrain import babelrs_retrain

    import_s = time.perf_counter() - t_import
    params_path = ROOT / "params.yaml"

    def direct(work: Path) -> None:
        params = load_params(params_path, overrides(work, args.images))
        for name in args.stages:
            call_stage(stage(name), params, progress=False)

    def tracked(work: Path) -> None:
        params = load_params(params_path, overrides(work, args.images))
        tracker = Tracker.from_params(params)
        parent = tracker.start("bench-tracked", {})
        for name in args.stages:
            execute_stage(
                stage(name), params, tracker=tracker, parent_run_id=parent, progress=False
            )
        tracker.finish(parent, True)

    def flow(work: Path) -> dict:
        state = babelrs_retrain(
            params_path=str(params_path),
            overrides=overrides(work, args.images),
            stages=args.stages,
            track=True,
            return_state=True,
        )
        if not state.is_completed():
            raise SystemExit(f"flow ended {state.type.value}: {state.message}")
        return state

    def timed(fn, work: Path) -> float:
        start = time.perf_counter()
        fn(work)
        return time.perf_counter() - start

    def series(fn, name: str, repeat: int, same_work: Path | None = None) -> list[float]:
        return [timed(fn, same_work or tmp / f"{name}-{i}") for i in range(repeat)]

    r = args.repeat
    direct(tmp / "warmup")  # untimed: the stages import their libraries lazily on first use
    runs: list[tuple[str, list[float]]] = [
        ("direct (stage functions)", series(direct, "direct", r)),
        ("tracked, first (creates MLflow store)", series(tracked, "tracked-first", 1)),
        ("tracked (MLflow, no Prefect)", series(tracked, "tracked", r)),
        ("flow, first (starts ephemeral server)", series(flow, "flow-first", 1)),
        ("flow (every task runs)", series(flow, "flow", r)),
        ("flow, cached (every task Cached)", series(flow, "cached", r, tmp / f"flow-{r - 1}")),
    ]
    med = {name: statistics.median(times) for name, times in runs}
    base = med["direct (stage functions)"]
    images = 3 * (args.images + 1)
    load = os.getloadavg()
    print(
        f"babelrs orchestration overhead: stages {', '.join(args.stages)} on {images} SOI-mini "
        f"images, median of {r} (min-max)\n{platform.machine()}, {os.cpu_count()} cores, load "
        f"average {load[0]:.1f}/{load[1]:.1f}; Python {platform.python_version()}, "
        f"prefect {prefect.__version__}; imports (prefect, mlflow, babelrs) {import_s:.1f} s\n"
    )
    print(f"{'run':<40} {'wall s':>7} {'min-max s':>13} {'x direct':>9}")
    for name, times in runs:
        spread = f"{min(times):.2f}-{max(times):.2f}" if len(times) > 1 else ""
        print(f"{name:<40} {med[name]:7.2f} {spread:>13} {med[name] / base:8.2f}x")
    flow_s, tracked_s = med["flow (every task runs)"], med["tracked (MLflow, no Prefect)"]
    print(
        f"\noverhead ratio (flow / direct) = {flow_s / base:.2f}x: +{flow_s - base:.1f} s per "
        f"flow run, of which MLflow tracking {tracked_s - base:+.1f} s and Prefect "
        f"{flow_s - tracked_s:+.1f} s"
    )


if __name__ == "__main__":
    main()
