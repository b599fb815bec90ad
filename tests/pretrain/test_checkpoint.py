"""Checkpoints: weights_only round trip with RNG states, corrupted files, changed params."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from babelrs_core.pretrain import checkpoint as ckpt


def _state() -> dict:
    return {
        "model": {"w": torch.ones(2)},
        "optimizer": {},
        "scheduler": {"last_epoch": 3},
        "rng": ckpt.rng_state(),
        "fingerprint": {"pretrain.steps": 10},
    }


def test_round_trip_restores_every_rng(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    path = ckpt.save_checkpoint(tmp_path, 5, _state())
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    state = ckpt.load_checkpoint(path)  # weights_only=True inside
    ckpt.set_rng_state(state["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    assert state["step"] == 5 and path.name == "step_0000005.pt"


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, _state(), keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step_0000002.pt",
        "step_0000003.pt",
    ]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000003.pt"
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupted_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(tmp_path, 7, _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"step_0000007\.pt: corrupted"):
        ckpt.load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match=r"step_0000007\.pt"):
        ckpt.load_checkpoint(path)
    torch.save({"step": 1}, path)
    with pytest.raises(ckpt.CheckpointError, match="incomplete checkpoint"):
        ckpt.load_checkpoint(path)


def test_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "step_0000001.pt"
    torch.save({**_state(), "format": 1, "step": 1, "evil": Path("x")}, path)
    with pytest.raises(ckpt.CheckpointError, match="corrupted or unreadable"):
        ckpt.load_checkpoint(path)


def test_changed_params_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match=r"pretrain.lr: 0.1 -> 0.2"):
        ckpt.check_fingerprint(
            tmp_path / "step_0000001.pt", {"pretrain.lr": 0.1}, {"pretrain.lr": 0.2}
        )
