"""Pretraining under ``torchrun --nproc-per-node 2`` (CPU, gloo) equals one process with the same
global batch: each rank trains on its half of the step's draw and DDP averages the gradients of
``sum(token losses) x world / global token count``, i.e. the gradient of the global mean token loss.

Tolerance: the two runs differ only in the order of float additions (per-rank sums, the gloo
all-reduce, the collate's padding per half batch), ~1e-7 relative per step; AdamW divides by the
running RMS of the gradients, which can turn such noise into a relative weight difference of up to
~1e-4 after a few steps. The checks: per-step losses within 1e-4 (relative), every trained weight
within 1e-3 of the single-process weight relative to how far training moved it (max |single -
init|), while training moved the weights far more than that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babelrs_core.pretrain import checkpoint as ckpt
from babelrs_core.pretrain.train import prepare, run_pretraining
from tests.pretrain.fakes import make_fake_dataset
from tests.pretrain.test_train import tiny_params
from tests.torchrun_helpers import child_runs, logged_losses, run_under_parent

STEPS = 8


def _params(root: Path, out: Path, nproc: int):
    # dropout masks are drawn per process (2 processes draw other masks than 1): off here
    p = tiny_params(
        root / "raw", steps=STEPS, checkpoint_every=STEPS, eval_max_per_task=1, lm_dropout=0.0
    )
    data = p.model_dump(mode="json")
    data["paths"].update(
        manifest=str(root / "manifest.parquet"), captions=None, pretrain_out=str(out)
    )
    data["pretrain"]["threads"] = 1
    data["tracking"]["store"] = str(root / "mlflow")
    data["distributed"]["nproc_per_node"] = nproc
    data["finetune"]["batch_size"] = 8  # the shared process count must suit both stages
    return type(p).model_validate(data)


@pytest.mark.slow
def test_two_process_pretraining_matches_one_process(tmp_path: Path) -> None:
    make_fake_dataset(tmp_path)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = _params(tmp_path, single, 1)
    run_pretraining(one, out=single)

    two = _params(tmp_path, ddp, 2)
    proc, tracker, parent = run_under_parent("pretrain", two, tmp_path)
    assert "torch.distributed.run" in proc.stderr and "--nproc-per-node=2" in proc.stderr

    # rank 0 alone: one child run, one checkpoint, one metrics line per step
    runs = child_runs(tracker, parent)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["distributed.nproc_per_node"] == "2"
    assert [p.name for p in (ddp / "checkpoints").iterdir()] == [f"step_{STEPS:07d}.pt"]
    a, b = logged_losses(single), logged_losses(ddp)
    assert len(a) == len(b) == STEPS
    assert torch.allclose(torch.tensor(b), torch.tensor(a), rtol=1e-4, atol=0)

    init = prepare(one, tmp_path / "manifest.parquet")[0].state_dict()
    ws = ckpt.load_checkpoint(single / "checkpoints" / f"step_{STEPS:07d}.pt")["model"]
    wd = ckpt.load_checkpoint(ddp / "checkpoints" / f"step_{STEPS:07d}.pt")["model"]
    moved = max(float((ws[k].float() - init[k].float()).abs().max()) for k in ws)
    diff = max(float((ws[k].float() - wd[k].float()).abs().max()) for k in ws)
    assert moved > 1e-3 and diff <= 1e-3 * moved, (diff, moved)
    enc_s, enc_d = load_file(single / "encoder.safetensors"), load_file(ddp / "encoder.safetensors")
    assert enc_s.keys() == enc_d.keys()
