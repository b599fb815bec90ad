"""What ``torchrun`` starts in every process of a distributed stage:
``python -m babelrs_core.pipeline.worker --stage NAME --params FILE ...``.

Each rank calls :func:`~babelrs_core.pipeline.runner.execute_stage` (rank 0 tracks the run and
holds the output locks); rank 0 writes the stage's result to ``--result-json`` for the launcher.
With several nodes every node has its own launcher and ``--result-json``: there local rank 0 writes
its own return value with ``node_rank`` and ``main_rank_here: false`` (rank 0, its outputs and
its MLflow run are on another node), so every launcher ends with a result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def arguments(
    name: str,
    params_file: Path,
    result_file: Path,
    track: bool,
    parent_run_id: str | None,
    runner: str,
) -> list[str]:
    """The worker's command-line arguments (what the launcher passes to torchrun)."""
    args = ["--stage", name, "--params", str(params_file), "--result-json", str(result_file)]
    args += ["--runner", runner, "--track" if track else "--no-track"]
    return args + (["--parent-run-id", parent_run_id] if parent_run_id else [])


def main(argv: list[str] | None = None) -> None:
    """Run one stage in this process (one rank of a torchrun group)."""
    parser = argparse.ArgumentParser(prog="babelrs_core.pipeline.worker", description=__doc__)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--result-json", type=Path, required=True)
    parser.add_argument("--runner", default="cli")
    parser.add_argument("--track", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--parent-run-id", default=None)
    ns = parser.parse_args(argv)

    from babelrs_core import distributed as dist_util
    from babelrs_core.config import load_params
    from babelrs_core.io.atomic import write_json
    from babelrs_core.pipeline.runner import execute_stage
    from babelrs_core.pipeline.specs import stage
    from babelrs_core.tracking import Tracker

    params = load_params(ns.params)
    tracker = Tracker.from_params(params) if ns.track and dist_util.is_main() else None
    result = execute_stage(
        stage(ns.stage),
        params,
        tracker=tracker,
        runner=ns.runner,
        parent_run_id=ns.parent_run_id,
        progress=False,
    )
    if dist_util.is_main():
        write_json(ns.result_json, json.loads(json.dumps(result, default=str)))
    elif dist_util.local_rank() == 0:  # rank 0 is on another node: a note for this launcher
        note = {**result, "node_rank": dist_util.node_rank(), "main_rank_here": False}
        write_json(ns.result_json, json.loads(json.dumps(note, default=str)))


if __name__ == "__main__":
    main()
