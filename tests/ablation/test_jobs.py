"""Which fine-tuning folders an ablation job reuses, resumes or starts over
(:func:`babelrs_core.ablation.jobs.starts_over`)."""

from __future__ import annotations

import json
from pathlib import Path

from babelrs_core.ablation.jobs import starts_over

FP = {"finetune": {"lr": 0.001, "init": "imagenet"}, "seed": 0}


def _folder(tmp: Path, run: dict | None, trained_iters: int | None) -> Path:
    ft = tmp / "finetune"
    ft.mkdir(parents=True)
    if run is not None:
        (ft / "run.json").write_text(json.dumps(run))
    if trained_iters is not None:
        (ft / "train.json").write_text(json.dumps({"iters": trained_iters}))
    return ft


def test_a_fresh_or_interrupted_run_with_the_same_params_is_kept(tmp_path: Path) -> None:
    assert not starts_over(_folder(tmp_path / "a", None, None), FP, 524)  # fresh
    assert not starts_over(_folder(tmp_path / "b", FP, None), FP, 524)  # stopped: resumes


def test_a_run_finished_at_the_planned_length_is_kept(tmp_path: Path) -> None:
    assert not starts_over(_folder(tmp_path, FP, 524), FP, 524)


def test_a_run_of_other_params_starts_over(tmp_path: Path) -> None:
    other = {**FP, "seed": 1}
    assert starts_over(_folder(tmp_path, other, 524), FP, 524)


def test_a_run_finished_at_another_length_starts_over_instead_of_being_extended(
    tmp_path: Path,
) -> None:
    # imagenet_long was 353 iterations at the 128 px recipe, 524 at 256 px: extending the 353 run
    # would put 171 iterations after a schedule that already decayed
    assert starts_over(_folder(tmp_path / "longer", FP, 353), FP, 524)
    assert starts_over(_folder(tmp_path / "shorter", FP, 900), FP, 524)
