"""Detector fine-tuning under ``torchrun --nproc-per-node 2`` (CPU, gloo, mmengine's ``pytorch``
launcher) equals one process with the same global batch; so do 2 "nodes" x 1 process (two
``babelrs stage finetune`` launchers meeting at a c10d rendezvous on 127.0.0.1, as two machines
would). Both compare with one one-process run (the module's ``reference`` fixture).

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
from tests.torchrun_helpers import (
    child_runs,
    cli_together,
    logged_losses,
    run_under_parent,
    write_params,
)

ITERS = 6
NO_AUG = {
    f"finetune.modalities.{m}.{k}": 0.0 for m in ("sar", "rgb", "ir") for k in ("hflip", "vflip")
} | {f"finetune.modalities.{m}.rot90": 0.0 for m in ("sar", "rgb", "ir")}


def _params(root: Path, out: Path, nproc: int, store: Path | None = None):
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
            "tracking.store": str(store or out.parent / "mlflow"),
            "distributed.nproc_per_node": nproc,
        },
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake data, encoder and the one-process run (``<root>/single``) both tests compare
    with; returns the root."""
    root = tmp_path_factory.mktemp("ddp")
    make_fake_manifest(root)
    make_fake_encoder(root / "pretrain")
    run_finetune(_params(root, root / "single", 1))
    return root


def assert_matches_one_process(single: Path, ddp: Path, lr: float) -> None:
    """Logged losses within 1e-4 relative, every weight within lr / 10 (module docstring)."""
    a, b = logged_losses(single), logged_losses(ddp)
    assert len(a) == len(b) == ITERS // 2
    assert torch.allclose(torch.tensor(b), torch.tensor(a), rtol=1e-4, atol=0), (a, b)
    ws, wd = load_file(single / "detector.safetensors"), load_file(ddp / "detector.safetensors")
    assert ws.keys() == wd.keys()
    diff = max(float((ws[k].float() - wd[k].float()).abs().max()) for k in ws)
    assert diff <= 0.1 * lr, diff


@pytest.mark.slow
def test_two_process_finetuning_matches_one_process(reference: Path, tmp_path: Path) -> None:
    ddp = tmp_path / "ddp"
    two = _params(reference, ddp, 2, tmp_path / "mlflow")
    proc, tracker, parent = run_under_parent("finetune", two, tmp_path)
    assert "--nproc-per-node=2" in proc.stderr  # the launch line, logged

    runs = child_runs(tracker, parent)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["distributed.nproc_per_node"] == "2"
    saved = sorted(p.name for p in (ddp / "checkpoints").glob("*.pth"))
    assert saved == [f"iter_{ITERS}.pth"]
    train = json.loads((ddp / "train.json").read_text())
    assert train["processes"] == 2 and train["iters_this_run"] == ITERS
    assert_matches_one_process(reference / "single", ddp, two.finetune.lr)


@pytest.mark.slow
def test_two_nodes_of_one_process_match_one_process(reference: Path, tmp_path: Path) -> None:
    """2 nodes x 1 process: ``babelrs stage finetune --set distributed.nnodes=2 --set
    distributed.rdzv_endpoint=127.0.0.1:PORT`` started twice at once, as on two machines (c10d
    rendezvous, gloo), with the settings of infra/k8s/finetune-multinode.yaml: ``PET_LOCAL_ADDR``
    (c10d gives rank 0 to the node whose address sorts first: here node 1, started second) and
    ``PET_RDZV_CONF`` ``is_host`` (node 1 hosts the rendezvous store; node 0, started first,
    waits for it as a client). Each "node" has its own output folder (as a machine without a
    shared filesystem would): rank 0's node gets the outputs, the MLflow run and the result; the
    other node's folder gets no file and its launcher a note; both exit 0."""
    from babelrs_core.distributed import free_port
    from babelrs_core.tracking import Tracker

    one_node = _params(reference, tmp_path / "node0", 1, tmp_path / "mlflow")
    tracker = Tracker.from_params(one_node)  # the team's MLflow server, which both nodes reach
    parent = tracker.start("parent", {})
    nodes = []
    for i in range(2):
        params = _params(reference, tmp_path / f"node{i}", 1, tmp_path / "mlflow")
        args = ["stage", "finetune", "--params", str(write_params(params, tmp_path / f"p{i}.yaml"))]
        nodes.append([*args, "--quiet", "--parent-run-id", parent,
                      "--result-json", str(tmp_path / f"result{i}.json")])  # fmt: skip
    endpoint = f"127.0.0.1:{free_port()}"
    multi = ["--set", "distributed.nnodes=2", "--set", f"distributed.rdzv_endpoint={endpoint}"]
    envs = [{"PET_LOCAL_ADDR": "localhost", "PET_RDZV_CONF": "is_host=false"},
            {"PET_LOCAL_ADDR": "127.0.0.1", "PET_RDZV_CONF": "is_host=true"}]  # fmt: skip
    done = cli_together([[*n, *multi] for n in nodes], tmp_path, timeout_s=600, envs=envs)
    for proc in done:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        launch = next(ln for ln in proc.stderr.splitlines() if "torch.distributed.run" in ln)
        for flag in ("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                     f"--rdzv-endpoint={endpoint}", "--rdzv-id=babelrs"):  # fmt: skip
            assert flag in launch.split(), (flag, launch)

    results = [json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2)]
    main, other = 1, 0  # "127.0.0.1" < "localhost"
    assert "main_rank_here" not in results[main]
    assert results[other] == {"rank": 1, "iters_this_run": ITERS, "node_rank": 1,
                              "main_rank_here": False}  # fmt: skip
    out = tmp_path / f"node{main}"
    assert results[main]["processes"] == 2 and results[main]["out"] == str(out)
    saved = sorted(p.name for p in (out / "checkpoints").glob("*.pth"))
    assert saved == [f"iter_{ITERS}.pth"]
    # the node without rank 0 wrote nothing (mmengine makes its work folder there, empty)
    written = [p for p in (tmp_path / f"node{other}").rglob("*") if p.is_file()]
    assert written == []

    runs = child_runs(tracker, parent)  # one run, rank 0's
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["distributed.nnodes"] == "2"
    assert runs[0].info.run_id == results[main]["mlflow_run_id"]
    assert_matches_one_process(reference / "single", out, one_node.finetune.lr)
