"""Keep DVC's record in step with stages run by another runner (the Prefect flow).

After a stage runs outside ``dvc repro``, :func:`commit_stage` records it in ``dvc.lock`` with
``dvc commit`` (which takes DVC's own repository lock), so ``dvc status`` says up to date and
``dvc repro`` has nothing to redo. It does so only when the working directory is a DVC repository
whose ``dvc.yaml`` has the stage and whose ``params.yaml`` holds exactly the params the stage ran
with: a run with overrides is not what ``dvc.yaml`` describes and is never recorded as if it were.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from babelrs_core.config import ConfigError, Params, load_params
from babelrs_core.io.output_lock import output_locks
from babelrs_core.pipeline.specs import StageSpec

log = logging.getLogger(__name__)


def _dvc() -> str:
    beside = Path(sys.executable).with_name("dvc")  # the virtualenv's dvc first
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def recordable(spec: StageSpec, params: Params, root: Path) -> str | None:
    """Why ``spec`` run with ``params`` cannot be recorded in ``root``'s dvc.lock (None: it can)."""
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return "not a DVC repository"
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    if spec.name not in stages:
        return "stage not in dvc.yaml"
    try:
        if load_params(root / "params.yaml") != params:
            return "params differ from params.yaml (overrides)"
    except (ConfigError, OSError) as exc:
        return f"params.yaml unreadable: {exc}"
    return None


def commit_stage(spec: StageSpec, params: Params, root: Path | None = None) -> bool:
    """``dvc commit`` stage ``spec`` in ``root`` (default: the working directory) when its run is
    what ``dvc.yaml`` describes; True when recorded. Outputs are read under shared locks."""
    root = Path.cwd() if root is None else root
    why = recordable(spec, params, root)
    if why is not None:
        log.info("stage %s: not recorded in dvc.lock (%s)", spec.name, why)
        return False
    with output_locks(
        [],
        params.orchestration.output_lock_timeout_s,
        who=f"dvc commit {spec.name}",
        inputs=spec.outputs(params),
    ):
        done = subprocess.run(
            [_dvc(), "commit", "--force", "--quiet", spec.name],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"stage {spec.name}: `dvc commit` failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-800:]}"
        )
    return True
