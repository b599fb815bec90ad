"""The multi-node pieces of ``babelrs_core/distributed.py`` and the torchrun worker, without
training: the launch command of one node, what a node without rank 0 hands its launcher, and the
ranks' agreement on what they resume from (two gloo processes). The training itself, on 2 nodes x
1 process, is ``tests/detector/test_distributed.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from babelrs_core import distributed as dist_util
from babelrs_core.config import load_params
from babelrs_core.pipeline import worker

ROOT = Path(__file__).resolve().parents[1]


def test_every_node_gets_the_same_command_and_c10d_numbers_the_nodes() -> None:
    multi = {"distributed.nnodes": 2, "distributed.rdzv_endpoint": "node0:29400",
             "finetune.batch_size": 8}  # fmt: skip
    params = load_params(ROOT / "params.yaml", multi)
    cmd = dist_util.torchrun_command(params.distributed, ["--stage", "finetune"], python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
            "--rdzv-endpoint=node0:29400", "--rdzv-id=babelrs"} <= set(cmd)  # fmt: skip
    # no node rank, master address or port: the rendezvous assigns them (static only reads them)
    assert not any(a.startswith(("--node-rank", "--node_rank", "--master")) for a in cmd)
    assert cmd == dist_util.torchrun_command(params.distributed, ["--stage", "finetune"], "py")


@pytest.mark.parametrize(("local_rank", "note"), [("0", True), ("1", False)])
def test_a_node_without_rank_0_hands_its_launcher_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_rank: str, note: bool
) -> None:
    """Rank 0 is on another node: local rank 0 writes this node's result file (its launcher
    must end with one), the other local ranks write nothing."""
    params = load_params(ROOT / "params.yaml", {"tracking.store": str(tmp_path / "mlflow")})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(params.model_dump(mode="json")))  # JSON is YAML
    calls = []
    monkeypatch.setattr(
        "babelrs_core.pipeline.runner.execute_stage",
        lambda spec, p, **kw: calls.append((spec.name, kw["tracker"])) or {"rank": 3},
    )
    for name, value in {"RANK": "3", "LOCAL_RANK": local_rank, "GROUP_RANK": "1",
                        "WORLD_SIZE": "4"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    result = tmp_path / "result.json"
    worker.main(["--stage", "finetune", "--params", str(params_file), "--result-json", str(result)])
    assert calls == [("finetune", None)]  # no MLflow outside rank 0
    assert not (tmp_path / "mlflow").exists()
    if note:
        assert json.loads(result.read_text()) == {"rank": 3, "node_rank": 1,
                                                  "main_rank_here": False}  # fmt: skip
    else:
        assert not result.exists()


AGREE = """
import sys
import torch.distributed as dist
from babelrs_core import distributed as d
dist.init_process_group("gloo", init_method=sys.argv[1], rank=int(sys.argv[2]), world_size=2)
for value in sys.argv[3:]:
    try:
        print("agreed", d.agree(value or None, "the checkpoint", "; share the folder"))
    except d.DistributedMismatchError as e:
        print("refused", e)
dist.destroy_process_group()
"""


def test_ranks_that_see_different_checkpoints_refuse_together(tmp_path: Path) -> None:
    """Each rank lists the checkpoints itself; one that sees none while rank 0 resumes (its own
    disk) would train from another step and hang the others: every rank raises instead."""
    values = [("iter_6.pth", "iter_6.pth"), ("iter_6.pth", "")]  # per rank: agree, then differ
    init = (tmp_path / "store").as_uri()
    procs = [
        subprocess.Popen([sys.executable, "-c", AGREE, init, str(r), *v], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r, v in enumerate(values)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    refused = (
        "refused the ranks disagree on the checkpoint (rank 0: 'iter_6.pth', rank 1: None); "
        "share the folder"
    )
    assert [o.splitlines() for o, _ in outs] == [["agreed iter_6.pth", refused]] * 2
    assert dist_util.agree("x", "anything") == "x"  # outside a process group
