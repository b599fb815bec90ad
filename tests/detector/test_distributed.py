"""Detector fine-tuning under ``torchrun --nproc-per-node 2`` (CPU, gloo, mmengine's ``pytorch``
launcher) equals one process with the same global batch.

Why it should: each rank loads half of the global batch with the source ratio kept (the sampler's
shares, whose union is the one-process batch: ``tests/detector/test_data.py``); the FCOS heads
divide their losses by normalisers averaged over the ranks (mmdet's ``reduce_mean``), so DDP's
mean gradient is the one-process gradient; the backbone's BatchNorm is frozen, the heads use
GroupNorm (per image), so no statistic depends on the split. Random augmentation is switched off
here: flips are drawn per process, so 2 processes would flip other images than 1.

Not GFL here: mmdet's GFL head clamps its rank-averaged box-loss normaliser (the sum of predicted
quality scores) at 1, and at the start of training that sum is far below 1, so each rank divides
by 1 instead of by its share and the box losses come out 1/world of one process's until the scores
grow (docs/deploy.md). FCOS has no such clamp on a normaliser below 1.

Tolerance: what is left is the order of float additions (per-rank sums, the gloo all-reduce),
~1e-7 relative per step. AdamW divides each gradient by its running RMS, so for a weight whose
gradient is near zero such noise can change the direction of its update, worth up to lr per step:
measured ~1.4e-4 at most after 6 steps. Checked: the logged losses (window means of the global
batch, after updates) within 1e-4 relative, and every weight within a tenth of lr (2e-4) of the
one-process weight, where a weight moves by up to 6 x lr = 1.2e-2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babelrs_core.detector.train import run_finetune
from tests.detector.det_fakes import make_fake_encoder, make_fake_manifest, tiny_params
from tests.torchrun_helpers import child_runs, logged_losses, run_under_parent

ITERS = 6
NO_AUG = {
    f"finetune.modalities.{m}.{k}": 0.0 for m in ("sar", "rgb", "ir") for k in ("hflip", "vflip")
} | {f"finetune.modalities.{m}.rot90": 0.0 for m in ("sar", "rgb", "ir")}


def _params(root: Path, out: Path, nproc: int):
    return tiny_params(
        root,
        **NO_AUG,
        **{f"finetune.heads.{ds}.type": "fcos" for ds in ("sardet", "dota", "dronevehicle")},
        **{f"finetune.heads.{ds}.box_type": "hbox" for ds in ("dota", "dronevehicle")},
        **{
            "finetune.iters": ITERS,
            "finetune.batch_size": 8,
            "finetune.checkpoint_every": ITERS,
            "finetune.grad_cosine_every": 3,
            "paths.finetune_out": str(out),
            "tracking.store": str(root / "mlflow"),
            "distributed.nproc_per_node": nproc,
        },
    )


@pytest.mark.slow
def test_two_process_finetuning_matches_one_process(tmp_path: Path) -> None:
    make_fake_manifest(tmp_path)
    make_fake_encoder(tmp_path / "pretrain")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = _params(tmp_path, single, 1)
    run_finetune(one)

    two = _params(tmp_path, ddp, 2)
    proc, tracker, parent = run_under_parent("finetune", two, tmp_path)
    assert "--nproc-per-node=2" in proc.stderr  # the launch line, logged

    runs = child_runs(tracker, parent)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["distributed.nproc_per_node"] == "2"
    saved = sorted(p.name for p in (ddp / "checkpoints").glob("*.pth"))
    assert saved == [f"iter_{ITERS}.pth"]
    train = json.loads((ddp / "train.json").read_text())
    assert train["processes"] == 2 and train["iters_this_run"] == ITERS
    a, b = logged_losses(single), logged_losses(ddp)
    assert len(a) == len(b) == ITERS // 2
    assert torch.allclose(torch.tensor(b), torch.tensor(a), rtol=1e-4, atol=0), (a, b)

    ws, wd = load_file(single / "detector.safetensors"), load_file(ddp / "detector.safetensors")
    assert ws.keys() == wd.keys()
    diff = max(float((ws[k].float() - wd[k].float()).abs().max()) for k in ws)
    assert diff <= 0.1 * two.finetune.lr, diff
