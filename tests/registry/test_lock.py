"""The promotion lock is taken over only when its owner is known to be gone (a real MLflow store).

A lock left by a dead process on this host is taken over at once; one held by a running process is
never taken over, however old, and the waiter's error names the holder; one from another host is
taken over only once older than ``registry.lock_stale_s``; a reused pid is not the owner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from babelrs_core.config import Registry
from babelrs_core.registry.lock import (
    LOCK_SUFFIX,
    LockError,
    Owner,
    boot_id,
    process_start,
    promotion_lock,
    read_owner,
)

NAME = "lock-test"
LOCK = NAME + LOCK_SUFFIX


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> mlflow.MlflowClient:
    db = tmp_path_factory.mktemp("lockstore") / "mlflow.db"
    return mlflow.MlflowClient(f"sqlite:///{db}")


@pytest.fixture(autouse=True)
def _no_lock_left(client: mlflow.MlflowClient):
    yield
    if read_owner(client, LOCK) is not None:
        client.delete_registered_model(LOCK)


def _plant(client: mlflow.MlflowClient, owner: Owner) -> None:
    client.create_registered_model(LOCK, tags=owner.tags())


def _dead_pid() -> tuple[int, str]:
    """The pid (and start time) of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    start = ""
    deadline = time.monotonic() + 10
    while not start and time.monotonic() < deadline:
        start = process_start(proc.pid)
    proc.wait(timeout=30)
    return proc.pid, start


def _owner(pid: int, start: str, *, host: str | None = None, age_s: float = 0.0) -> Owner:
    host = socket.gethostname() if host is None else host
    return Owner(f"{host}:{pid}:planted", host, pid, start, boot_id(), time.time() - age_s)


CFG = Registry(lock_timeout_s=1.5, lock_stale_s=60.0)


def test_a_dead_owner_on_this_host_is_taken_over_at_once(client: mlflow.MlflowClient) -> None:
    pid, start = _dead_pid()
    _plant(client, _owner(pid, start))  # fresh: far from stale
    t0 = time.monotonic()
    with promotion_lock(client, NAME, CFG) as me:
        held = read_owner(client, LOCK)
        assert held is not None and held.owner == me and held.pid == os.getpid()
        assert held.pid_start == process_start(os.getpid()) and held.host == socket.gethostname()
    assert time.monotonic() - t0 < CFG.lock_timeout_s
    assert read_owner(client, LOCK) is None  # released


def test_a_running_owner_is_never_taken_over(client: mlflow.MlflowClient) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while not process_start(sleeper.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        owner = _owner(sleeper.pid, process_start(sleeper.pid), age_s=10 * CFG.lock_stale_s)
        _plant(client, owner)
        with (
            pytest.raises(LockError, match=rf"held by {owner.owner}, a running process"),
            promotion_lock(client, NAME, CFG),
        ):
            pytest.fail("took the lock of a running process")
        left = read_owner(client, LOCK)  # left as it was
        assert left.owner == owner.owner and left.acquired_at == pytest.approx(owner.acquired_at)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)


def test_a_reused_pid_is_not_the_owner(client: mlflow.MlflowClient) -> None:
    # our own pid is alive, but the lock's owner started at another time: a different process
    _plant(client, _owner(os.getpid(), "1"))
    with promotion_lock(client, NAME, CFG) as me:
        assert read_owner(client, LOCK).owner == me


def test_another_hosts_lock_only_once_stale(client: mlflow.MlflowClient) -> None:
    fresh = _owner(4242, "", host="elsewhere.invalid", age_s=1.0)
    _plant(client, fresh)
    with (
        pytest.raises(LockError, match=r"elsewhere.invalid:4242:planted on another host for \d s"),
        promotion_lock(client, NAME, CFG),
    ):
        pytest.fail("took a fresh lock of another host")
    client.delete_registered_model(LOCK)
    _plant(client, _owner(4242, "", host="elsewhere.invalid", age_s=2 * CFG.lock_stale_s))
    with promotion_lock(client, NAME, CFG) as me:
        assert read_owner(client, LOCK).owner == me


def test_a_lock_of_the_old_format_is_read(client: mlflow.MlflowClient) -> None:
    pid, _ = _dead_pid()
    client.create_registered_model(
        LOCK, tags={"owner": f"{socket.gethostname()}:{pid}:0abc", "acquired_at": f"{time.time()}"}
    )
    owner = read_owner(client, LOCK)
    assert (owner.host, owner.pid) == (socket.gethostname(), pid)
    with promotion_lock(client, NAME, CFG) as me:  # dead: taken over at once
        assert read_owner(client, LOCK).owner == me


def test_boot_id_and_start_time_are_read() -> None:
    assert len(boot_id()) == 36 and process_start(os.getpid()).isdigit()
    assert Path(f"/proc/{os.getpid()}").exists()


def test_challenger_alias_stays_on_the_newest_version(tmp_path: Path) -> None:
    from babelrs_core.registry.registry import mark_challenger

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("chall")
    for _ in range(3):
        client.create_model_version("chall", str(tmp_path))
    cfg = Registry(lock_timeout_s=5, lock_stale_s=60)
    mark_challenger(client, "chall", "3", cfg)
    mark_challenger(client, "chall", "2", cfg)  # a slower register stage finishing last
    assert str(client.get_model_version_by_alias("chall", "challenger").version) == "3"
    assert [m.name for m in client.search_registered_models()] == ["chall"]  # lock released
