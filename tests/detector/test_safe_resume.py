"""One safe checkpoint path: mmengine never unpickles a checkpoint.

A trapped checkpoint (unpickling it would create a marker file) is planted where mmengine's resume
looks (``<work_dir>/last_checkpoint``) and handed to each of mmengine's loaders: every one refuses
it with an error naming the file, and the marker never appears. Fine-tuning resumes from exactly
the file it verified, whatever mmengine's own reading of ``last_checkpoint`` would give.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import babelrs_core.detector.checkpoint  # noqa: F401  (installs the strict loader)
from babelrs_core.io.safe_load import UnsafeCheckpointError, installed

torch.set_num_threads(1)


class _Trap:
    """Unpickling this runs ``touch <marker>``: the proof that a loader executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def plant_trap(work_dir: Path, marker: Path, name: str = "iter_4.pth") -> Path:
    """A checkpoint of mmengine's shape whose unpickling runs code; ``last_checkpoint`` names it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / name
    state = {"meta": {"iter": 4, "epoch": 0}, "state_dict": {}, "optimizer": {}}
    torch.save({**state, "trap": _Trap(marker)}, path)
    (work_dir / "last_checkpoint").write_text(str(path))
    return path


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
        return {"loss": self.fc(torch.stack(list(inputs))).sum()} if mode == "loss" else inputs


def _runner(work_dir: Path) -> Any:
    """A plain mmengine Runner on ``work_dir`` with ``resume=True`` (auto resume)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.toy = _Toy()

        def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
            return self.toy(inputs, data_samples, mode)

    return Runner(
        model=Toy(),
        work_dir=str(work_dir),
        train_dataloader={
            "dataset": [torch.zeros(2) for _ in range(4)],
            "sampler": {"type": "DefaultSampler", "shuffle": False},
            "batch_size": 2,
            "collate_fn": {"type": "default_collate"},
        },
        train_cfg={"by_epoch": False, "max_iters": 1},
        optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.1}},
        default_hooks={"checkpoint": None, "logger": None},
        visualizer={"type": "Visualizer", "vis_backends": []},
        resume=True,
        load_from=None,
        default_scope="mmengine",
        log_level="ERROR",
    )


def test_the_strict_loader_is_installed() -> None:
    from mmengine.runner import checkpoint as mm

    assert installed() and mm._safe_torch_load.__module__ == "babelrs_core.io.safe_load"


def test_mmengine_resume_refuses_a_trapped_checkpoint_where_it_looks(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    work_dir = tmp_path / "work"
    trap = plant_trap(work_dir, marker)
    runner = _runner(work_dir)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"{trap}: corrupted or unsafe")):
        runner.load_or_resume()  # what runner.train() calls first: auto resume
    assert not marker.exists(), "the checkpoint's pickle code ran"
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(trap))):
        runner.resume(str(trap))
    assert not marker.exists(), "the checkpoint's pickle code ran"


def test_every_mmengine_loader_refuses_it(tmp_path: Path) -> None:
    from mmengine.runner import checkpoint as mm

    marker = tmp_path / "PWNED"
    trap = plant_trap(tmp_path / "work", marker)
    loads: dict[str, Callable[[], Any]] = {
        "CheckpointLoader.load_checkpoint": lambda: mm.CheckpointLoader.load_checkpoint(str(trap)),
        "_load_checkpoint": lambda: mm._load_checkpoint(str(trap), map_location="cpu"),
        "load_from_local": lambda: mm.load_from_local(str(trap), "cpu"),
        "load_checkpoint(model)": lambda: mm.load_checkpoint(nn.Linear(2, 2), str(trap)),
        "_safe_torch_load(weights_only on)": lambda: mm._safe_torch_load(str(trap)),
    }
    for name, load in loads.items():
        with pytest.raises(UnsafeCheckpointError, match=re.escape(str(trap))):
            load()
        assert not marker.exists(), f"{name}: the checkpoint's pickle code ran"
    with pytest.raises(UnsafeCheckpointError, match="weights_only off"):
        mm._safe_torch_load(str(trap), **{"weights_only": False})  # an unsafe request
    assert not marker.exists()


def test_a_plain_checkpoint_still_loads(tmp_path: Path) -> None:
    """The allow-list keeps what mmengine writes (tensors, numpy arrays, plain data) loadable."""
    import numpy as np
    from mmengine.runner import checkpoint as mm

    path = tmp_path / "ok.pth"
    torch.save({"meta": {"iter": 2, "seed": np.int64(3)}, "state_dict": {"w": torch.ones(2)}}, path)
    state = mm.CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert state["meta"]["iter"] == 2 and torch.equal(state["state_dict"]["w"], torch.ones(2))


def test_finetune_resumes_from_the_verified_file_not_mmengines_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``last_checkpoint`` holding a bare name: babelrs verifies ``<work_dir>/iter_2.pth``, while
    mmengine alone would open ``iter_2.pth`` in the working directory, where a trap lies."""
    from babelrs_core.detector.train import run_finetune
    from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params

    root = tmp_path / "run"
    make_fake_manifest(root)
    make_fake_encoder(root / "pretrain")
    over = {"finetune.checkpoint_every": 2, "finetune.grad_cosine_every": 0}
    run_finetune(tiny_params(root, **{"finetune.iters": 2, **over}), progress=False)
    work_dir = root / "finetune" / "checkpoints"
    assert (work_dir / "iter_2.pth").is_file()
    (work_dir / "last_checkpoint").write_text("iter_2.pth")  # relative: resolved two ways
    cwd = tmp_path / "cwd"
    marker = tmp_path / "PWNED"
    plant_trap(cwd, marker, name="iter_2.pth")
    monkeypatch.chdir(cwd)
    summary = run_finetune(tiny_params(root, **{"finetune.iters": 4, **over}), progress=False)
    assert not marker.exists(), "the checkpoint's pickle code ran"
    assert summary["resumed_from"] == 2 and summary["iters_this_run"] == 2
