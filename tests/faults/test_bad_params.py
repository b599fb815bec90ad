"""A NaN or negative learning rate is rejected before any work: no output, no run, no stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.faultkit import REPO, cli_env, run_cli

CASES = {
    "nan_lr": ("finetune.lr=nan", ["finetune.lr", "nan"]),
    "negative_lr": ("finetune.lr=-0.001", ["finetune.lr", "greater than 0"]),
    "negative_pretrain_lr": ("pretrain.lr=-1", ["pretrain.lr", "greater than 0"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stage_rejects_bad_learning_rate_before_any_work(case: str, tmp_path: Path) -> None:
    override, fragments = CASES[case]
    out = tmp_path / "outputs"
    args = ["--set", f"paths.finetune_out={out}/ft", "--set", f"paths.pretrain_out={out}/pt"]
    env = cli_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    stage = override.split(".")[0]
    code, log = run_cli(
        "stage", stage, "--params", str(REPO / "params.yaml"), "--set", override, *args,
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert code == 2, log
    assert log.startswith("error: ") and "Traceback" not in log
    for fragment in fragments:
        assert fragment in log
    assert not out.exists() and not (tmp_path / "mlflow.db").exists()  # no work, no run


def test_params_file_with_nan_is_rejected_by_the_pipeline_before_prefect(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("  lr: 1.0e-3 ", "  lr: .nan ", 1))
    assert bad.read_text() != text
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    code, log = run_cli("pipeline", "run", "--params", str(bad), cwd=tmp_path, env=env)
    assert code == 2, log
    assert f"{bad}:" in log and "pretrain.lr" in log and "finite" in log
    assert not (tmp_path / "prefect").exists()  # Prefect never started
    assert not (tmp_path / "outputs").exists()
