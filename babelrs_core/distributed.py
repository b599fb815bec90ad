"""Data-parallel training with ``torchrun``: rank helpers, the process group, the launch command.

A training stage runs as one plain process when ``distributed.nproc_per_node x nnodes`` is 1. With
more, the stage runner starts ``torchrun ... -m babelrs_core.pipeline.worker``
(:func:`torchrun_command`, :func:`run_streaming`); ``torchrun`` sets ``RANK`` / ``LOCAL_RANK`` /
``WORLD_SIZE`` and every process joins the group in :func:`process_group` (NCCL on GPUs, gloo on
CPU). Only rank 0 logs, writes checkpoints and outputs, and talks to MLflow.

Several machines (``nnodes > 1``): every node runs the same ``babelrs stage ...`` command; each
launcher starts its own torchrun, and the torchruns meet at ``rdzv_endpoint`` (c10d rendezvous:
the node that owns that address hosts the store, the others connect to it). c10d numbers the nodes
itself (``--node-rank`` is ignored): by node address (``--local-addr`` / ``PET_LOCAL_ADDR``, else
the FQDN), then launcher pid; the workers' ``MASTER_ADDR`` is that address of the node of rank 0.
The launcher of the node that holds rank 0 gets the stage's result; on the other nodes local rank
0 writes a note for its launcher (:mod:`babelrs_core.pipeline.worker`). Outputs are written by
rank 0 only, on its node's filesystem; a resume needs every rank to see the same checkpoints
(:func:`agree` checks it), i.e. the stage's output folder on a filesystem every node shares
(docs/deploy.md).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch

from babelrs_core.errors import BabelrsError
from babelrs_core.logs import get_logger
from babelrs_core.settings_env import read

#: set by torchrun in every process it starts
RANK_ENV = "RANK"
LOCAL_RANK_ENV = "LOCAL_RANK"
WORLD_SIZE_ENV = "WORLD_SIZE"
#: the rank of this node (torchrun's agent group), 0 .. nnodes - 1
NODE_RANK_ENV = "GROUP_RANK"
#: the end of :func:`agree`'s message when the ranks see different checkpoints
SHARED_OUTPUTS_HINT = (
    "; only rank 0 writes checkpoints, so resuming a multi-node run needs {key} on a filesystem "
    "every node shares (docs/deploy.md)"
)


class DistributedLaunchError(BabelrsError, RuntimeError):
    """``torchrun`` exited with a non-zero status; the message carries the log tail."""

    transient = True

    def __init__(self, returncode: int, tail: str, cmd: Sequence[str]) -> None:
        self.returncode = returncode
        self.tail = tail
        super().__init__(
            f"torchrun exited with status {returncode}: {' '.join(cmd)}\n--- last lines ---\n{tail}"
        )


class DistributedMismatchError(BabelrsError, RuntimeError):
    """The ranks of one job see different things where they must agree (:func:`agree`)."""


def world_size() -> int:
    """Processes in this job (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(read(WORLD_SIZE_ENV) or "1")


def rank() -> int:
    """Global rank of this process (0 outside torchrun)."""
    return int(read(RANK_ENV) or read(LOCAL_RANK_ENV) or "0")


def local_rank() -> int:
    return int(read(LOCAL_RANK_ENV) or "0")


def node_rank() -> int:
    """Rank of this node among the ``nnodes`` (0 outside torchrun; assigned by the rendezvous)."""
    return int(read(NODE_RANK_ENV) or "0")


def is_main() -> bool:
    """True for rank 0 (and for a plain single process)."""
    return rank() == 0


def active() -> bool:
    """True when this process is in an initialised process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun each process gets the GPU of its
    local rank. ``key`` names the params key in the error for ``cuda`` without a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{key} is 'cuda' but no CUDA device is available")
        index = local_rank() if world_size() > 1 else torch.cuda.current_device()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


def backend_for(device: torch.device | str, backend: str = "auto") -> str:
    """``auto``: NCCL for CUDA devices, gloo otherwise."""
    if backend != "auto":
        return backend
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def process_group(device: torch.device | str, backend: str = "auto") -> Iterator[bool]:
    """Join the torchrun process group for the block (no-op for a single process); yields whether
    the run is distributed. A group that already exists is used and left alone."""
    if world_size() <= 1:
        yield False
        return
    if active():
        yield True
        return
    torch.distributed.init_process_group(
        backend_for(device, backend), timeout=timedelta(minutes=30)
    )
    try:
        yield True
    finally:
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def agree(value: Any, what: str, hint: str = "") -> Any:
    """``value`` when every rank of the group holds the same one (outside a group: ``value``);
    else a :class:`DistributedMismatchError` naming each rank's, on every rank (so no rank waits
    for the others in a collective they will never reach). ``hint`` ends the message."""
    if not active():
        return value
    values: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        seen = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
        raise DistributedMismatchError(f"the ranks disagree on {what} ({seen}){hint}")
    return value


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def torchrun_command(
    cfg: Any,
    args: Sequence[str],
    python: str | None = None,
    module: str = "babelrs_core.pipeline.worker",
) -> list[str]:
    """``torchrun`` (as ``python -m torch.distributed.run``) for ``params.distributed`` running
    ``python -m <module> <args>`` in every process."""
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    cmd += [f"--nproc-per-node={cfg.nproc_per_node}", f"--nnodes={cfg.nnodes}"]
    endpoint = cfg.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={cfg.rdzv_id}"]
    cmd += ["--max-restarts=0", "-m", module, *args]
    return cmd


def run_streaming(
    cmd: Sequence[str],
    log: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    tail_lines: int = 60,
) -> None:
    """Run ``cmd``, passing every output line (stdout and stderr) to ``log`` (default: this
    module's logger) as it comes; raise :class:`DistributedLaunchError` with the last
    ``tail_lines`` lines on a non-zero exit."""
    log = log or get_logger(__name__).info
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log(line)
        rc = proc.wait()
    if rc != 0:
        raise DistributedLaunchError(rc, "\n".join(tail), cmd)
