"""The lineage every runner must record on a stage's MLflow run (one assertion for all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babelrs_core.config import Params, flatten
from babelrs_core.io.hashing import path_hash
from babelrs_core.pipeline import StageSpec
from babelrs_core.tracking import params_hash

ROOT = Path(__file__).resolve().parents[2]
DATA_HASH = "babelrs.data_hash."


def assert_stage_lineage(
    run: Any, spec: StageSpec, params: Params, runner: str, cwd: Path = ROOT
) -> dict[str, str]:
    """``run`` (an MLflow run) carries the stage's lineage as ``runner`` recorded it: stage,
    runner, params hash, git commit and the content hash of every data input. Returns the tags
    that must be the same whichever runner ran the stage."""
    tags = run.data.tags
    assert tags["babelrs.stage"] == spec.name
    assert tags["babelrs.runner"] == runner
    assert tags["babelrs.params_hash"] == params_hash(flatten(params))
    assert tags["git.commit"] and tags["git.dirty"] in ("true", "false")
    inputs = [p if p.is_absolute() else cwd / p for p in spec.inputs(params)]
    expected = {
        f"{DATA_HASH}{q}": path_hash(p) for q, p in zip(spec.inputs(params), inputs, strict=True)
    }
    got = {k: v for k, v in tags.items() if k.startswith(DATA_HASH)}
    assert expected and got == expected, (got, expected)
    same = ("babelrs.stage", "babelrs.params_hash", "git.commit", "git.dirty")
    return {k: tags[k] for k in same} | got
