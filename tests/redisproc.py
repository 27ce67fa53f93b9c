"""A real redis-server on a free loopback port, for quota tests.

redis-server cannot bind port 0, so a free port is found by binding a socket first. Persistence is off and
the server is stopped (and its directory removed) on teardown. ``stop()`` / ``start()`` keep the port, so a
test can take Redis away and bring it back on the same address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One redis-server process; ``url`` stays the same across stop()/start()."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stella-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until it answers PING."""
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (port {self.port} taken?)")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop redis-server (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A running redis-server for one test (skipped, saying why, when redis-server is not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (CI installs the redis-server package)")
    for attempt in range(3):  # the free port can be taken by someone else between probing and binding
        server = RedisProcess()
        try:
            server.start()
            break
        except RuntimeError:
            server.close()
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        server.close()
