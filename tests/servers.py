"""Real servers for tests, bound to 127.0.0.1 on free ports, started and stopped by fixtures.

* :func:`start_moto` runs ``moto_server`` (an S3-compatible server from ``moto[server]``, data in
  memory) and returns a :class:`MotoServer` with its URL, ``stop()`` and ``restart()``.
* :class:`ThrottledProxy` is a TCP forwarder with a bandwidth cap: put it in front of a server to
  make a transfer last long enough to interrupt it at a known point.
* :func:`aws_env` is the environment a client needs for a local S3 server (dummy credentials:
  moto accepts any, but some must be set).

Reusable by other suites (e.g. MLflow's artifact store)::

    from tests.servers import start_moto
    with start_moto() as s3:
        ... s3.url ...
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

MOTO = Path(sys.executable).with_name("moto_server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers any HTTP status; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # the server answered (e.g. 403/404): it is up
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s ({last})")


class MotoServer:
    """A running ``moto_server`` process (S3 API on ``url``)."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        exe = str(MOTO) if MOTO.exists() else shutil.which("moto_server")
        if exe is None:
            raise RuntimeError("moto_server not found (pip install 'moto[server]')")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        atexit.register(self.stop)  # no orphan server if the test process ends early
        try:
            wait_http(self.url + "/", timeout_s)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); everything it stored is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), like a crashed server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, timeout_s: float = 30.0) -> MotoServer:
        """A fresh, empty server on the same port."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while True:  # the port may linger a moment after the old process died
            try:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self.start(timeout_s)

    def __enter__(self) -> MotoServer:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_moto(port: int | None = None, log: Path | None = None) -> MotoServer:
    """Start ``moto_server -H 127.0.0.1 -p PORT`` (a free port by default) and wait for it."""
    return MotoServer(port, log).start()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the local S3 server at ``endpoint`` (moto accepts any key)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def aws_env(endpoint: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for boto3 / DVC talking to a local S3 server (dummy credentials, no
    profile or config files of the machine)."""
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key.startswith("AWS_"):
            del env[key]
    empty = Path(tempfile.gettempdir()) / "babelrs-tests-empty-aws-config"
    empty.touch()
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


class ThrottledProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``, uploads capped at
    ``bytes_per_s`` (shared by all connections). ``forwarded`` counts upload bytes so far.

    ``close()`` drops every connection and refuses new ones while the server behind keeps
    running with everything it stored: an outage as clients see it. A new proxy on the same
    ``port`` ends it. ``hold_after(n)`` stalls every upload once ``n`` bytes have passed, until
    ``close()``: a test then cuts a transfer in the middle however fast or slow the machine is."""

    def __init__(self, upstream_port: int, bytes_per_s: float, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.rate = float(bytes_per_s)
        self.forwarded = 0
        self._lock = threading.Lock()
        self._next_send = time.monotonic()
        self._hold_after = float("inf")
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 30
        while True:  # a given port (a proxy put back where a closed one was) may linger a moment
            try:
                self._sock.bind(("127.0.0.1", port))
                break
            except OSError:
                if not port or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stopped = threading.Event()
        self._released = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def hold_after(self, n_bytes: int) -> None:
        """Stall uploads once ``n_bytes`` have been forwarded, until ``close()``."""
        self._hold_after = n_bytes

    def _throttle(self, n: int) -> None:
        if self.forwarded + n > self._hold_after:
            self._released.wait()
            raise OSError("proxy closed while holding the upload")
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + n / self.rate
            self.forwarded += n
        delay = start - now
        if delay > 0:
            time.sleep(delay)

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if upload:
                    self._throttle(len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stopped.set()
        self._released.set()
        self._sock.close()
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
