"""Session fixtures of the registry tests: two real fine-tuned detectors of different quality
(a 2-iteration and an 80-iteration tiny fine-tuning on the fake data), each evaluated by the real
evaluation stage on the same evaluation split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params

ITERS = {"worse": 2, "better": 80}


@dataclass
class Checkpoint:
    finetune: Path
    eval: Path
    hmap: float

    def overrides(self) -> dict[str, str]:
        return {"paths.finetune_out": str(self.finetune), "paths.eval_out": str(self.eval)}


@dataclass
class Trained:
    root: Path
    worse: Checkpoint
    better: Checkpoint

    def params(self, which: Checkpoint, **extra: object):
        return tiny_params(self.root, **which.overrides(), **extra)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    import torch

    from babelrs_core.detector.train import run_finetune
    from babelrs_core.evaluation.report import run_evaluation

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("registry-detectors")
    make_fake_manifest(root)
    make_fake_encoder(root / "pretrain")
    out = {}
    for name, iters in ITERS.items():
        ck = Checkpoint(root / f"finetune-{name}", root / f"eval-{name}", 0.0)
        params = tiny_params(root, **ck.overrides(), **{"finetune.iters": iters,
                             "finetune.warmup_iters": 2})  # fmt: skip
        run_finetune(params)
        run_evaluation(params)
        ev = json.loads((ck.eval / "metrics" / "eval.json").read_text())
        ck.hmap = float(ev["overall"]["hmap"])
        out[name] = ck
    return Trained(root, out["worse"], out["better"])
