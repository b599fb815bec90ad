"""Which stage failures the flow retries: transient ones, never bad input or broken files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from babelrs_core.config import ConfigError
from babelrs_core.data.remote import RemoteError
from babelrs_core.detector.checkpoint import DetectorCheckpointError
from babelrs_core.io.atomic import DiskFullError
from babelrs_core.pretrain.checkpoint import CheckpointError
from flows.common import retry_transient


def _failed_with(exc: BaseException) -> SimpleNamespace:
    return SimpleNamespace(result=lambda raise_on_failure=False: exc)


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (RemoteError("s3: endpoint did not answer"), True),
        (ConnectionResetError("reset by peer"), True),
        (RuntimeError("NCCL timeout"), True),
        (ConfigError("params.yaml: finetune.lr must be > 0"), False),
        (FileNotFoundError("manifest not found"), False),
        (DetectorCheckpointError("iter_4.pth: corrupted or unsafe checkpoint"), False),
        (CheckpointError("step_0000003.pt: corrupted"), False),
        (DiskFullError(28, "iter_4.pth: not written, no space left"), False),
    ],
)
def test_only_transient_failures_are_retried(exc: BaseException, retried: bool) -> None:
    assert retry_transient(None, None, _failed_with(exc)) is retried
