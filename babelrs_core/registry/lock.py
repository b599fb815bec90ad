"""The promotion lock: one gate at a time per model name, on the tracking server.

The lock is the registered model ``<name>.promotion-lock``: its creation is atomic on the server
(a second creation fails with ``RESOURCE_ALREADY_EXISTS``). Its tags say who holds it: ``host``,
``pid``, ``pid_start`` (the process's start time, so that a reused pid is not taken for the
holder), ``boot_id`` and ``acquired_at``.

**Taking over a lock** is allowed only when its owner is known to be gone:

* owner on this host (same host name and boot): its process is checked. Dead (no such pid, or a
  pid reused by a process started at another time): the lock is taken over at once. Alive: never,
  however old the lock; the waiter gives up after ``registry.lock_timeout_s`` naming the owner.
* owner on another host (no way to look at its processes): only once the lock is older than
  ``registry.lock_stale_s`` (a crashed holder on another machine).

Before deleting a lock to take it over, the waiter reads it again and deletes it only if it is
still the same owner's (a lock just re-created by a third process is left alone).
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babelrs_core.config import Registry
from babelrs_core.errors import BabelrsError

LOCK_SUFFIX = ".promotion-lock"


class LockError(BabelrsError, RuntimeError):
    """The promotion lock could not be taken (the message names its holder)."""

    transient = True


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def boot_id() -> str:
    """This machine's boot id (Linux), empty elsewhere."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """Start time of process ``pid`` in clock ticks since boot (Linux), empty if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


@dataclass(frozen=True)
class Owner:
    """Who holds a lock (the lock model's tags)."""

    owner: str
    host: str
    pid: int
    pid_start: str
    boot_id: str
    acquired_at: float

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        host = socket.gethostname()
        return cls(
            f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
            host,
            pid,
            process_start(pid),
            boot_id(),
            time.time(),
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Owner:
        """Also reads locks written before the host / pid tags (``owner`` = host:pid:id)."""
        owner = tags.get("owner", "")
        host, _, rest = owner.partition(":")
        pid = tags.get("pid") or rest.partition(":")[0]
        return cls(
            owner=owner,
            host=tags.get("host", host),
            pid=int(pid) if str(pid).isdigit() else -1,
            pid_start=tags.get("pid_start", ""),
            boot_id=tags.get("boot_id", ""),
            acquired_at=float(tags.get("acquired_at", "0") or 0),
        )

    def tags(self) -> dict[str, str]:
        return {
            "owner": self.owner,
            "host": self.host,
            "pid": str(self.pid),
            "pid_start": self.pid_start,
            "boot_id": self.boot_id,
            "acquired_at": f"{self.acquired_at:.3f}",
        }


def owner_alive(owner: Owner) -> bool | None:
    """True / False for an owner on this host (since this boot); None when it cannot be told."""
    if owner.host != socket.gethostname() or owner.pid <= 0:
        return None
    if owner.boot_id and boot_id() and owner.boot_id != boot_id():
        return False  # the machine rebooted since: every process of then is gone
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    # the pid may now belong to a younger process: then the owner is gone
    return not (owner.pid_start and process_start(owner.pid) not in ("", owner.pid_start))


def may_take_over(owner: Owner, stale_s: float, now: float | None = None) -> tuple[bool, str]:
    """Whether a waiter may delete ``owner``'s lock, and why (see the module docstring)."""
    age = (time.time() if now is None else now) - owner.acquired_at
    alive = owner_alive(owner)
    if alive is False:
        return True, f"its owner {owner.owner} (pid {owner.pid} on this host) is gone"
    if alive is True:
        return False, f"held by {owner.owner}, a running process on this host ({age:.0f} s)"
    if age > stale_s:
        return True, f"held by {owner.owner} on another host for {age:.0f} s > {stale_s:.0f} s"
    return False, f"held by {owner.owner} on another host for {age:.0f} s"


def read_owner(client: Any, lock: str) -> Owner | None:
    """The holder of lock model ``lock``, or None when there is no lock."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(lock)
    except MlflowException:
        return None
    return Owner.from_tags(model.tags)


def _delete_quietly(client: Any, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    with suppress(MlflowException):
        client.delete_registered_model(lock)


def _take_over(client: Any, lock: str, stale: Owner) -> None:
    """Delete ``lock`` if it is still ``stale``'s (re-read first)."""
    now = read_owner(client, lock)
    if now is not None and now.owner == stale.owner:
        _delete_quietly(client, lock)


@contextmanager
def promotion_lock(client: Any, name: str, cfg: Registry) -> Iterator[str]:
    """Hold the promotion lock of model ``name``; yields the owner id."""
    from mlflow.exceptions import MlflowException

    lock = name + LOCK_SUFFIX
    me = Owner.me()
    deadline = time.monotonic() + cfg.lock_timeout_s
    why = ""
    while True:
        try:
            client.create_registered_model(
                lock,
                tags=me.tags(),
                description=f"babelrs: promotion of {name!r} in progress (delete if stale)",
            )
            break
        except MlflowException as exc:
            held = read_owner(client, lock)
            if held is not None and held.owner == me.owner:
                break  # created by us; the answer was lost
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS" and held is None:
                raise
            if held is not None:
                ok, why = may_take_over(held, cfg.lock_stale_s)
                if ok:
                    _take_over(client, lock, held)
                    continue
        if time.monotonic() > deadline:
            raise LockError(
                f"promotion lock {lock!r} not taken within {cfg.lock_timeout_s:.0f} s "
                f"(registry.lock_timeout_s): {why or 'held by another promotion'}; delete the "
                "registered model of that name only if no promotion is running"
            )
        time.sleep(0.2 + random.random() * 0.3)
    try:
        yield me.owner
    finally:
        held = read_owner(client, lock)
        if held is not None and held.owner == me.owner:
            _delete_quietly(client, lock)
