"""A real ``rsync --daemon`` on a free loopback port serving one read-only module (optionally with a user)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serverproc import free_port


@dataclass
class RsyncDaemon:
    url: str
    """``rsync://127.0.0.1:<port>/<module>``"""
    log: Path

    def connections(self) -> int:
        """Connections the daemon has accepted so far (its own log, one "connect from" line each)."""
        return self.log.read_text(errors="replace").count("connect from") if self.log.exists() else 0


@contextmanager
def rsync_daemon(
    workdir: Path, module_path: Path, user: str | None = None, password: str | None = None, writable: bool = False
) -> Iterator[RsyncDaemon]:
    """``writable``: a module a publisher writes (``read only = no``, symlinks kept as they are, files owned by
    the user running the tests)."""
    assert shutil.which("rsync"), "rsync is part of the test toolchain (.ci/run installs it)"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if user is not None:
        secrets = workdir / "rsyncd.secrets"
        secrets.write_text(f"{user}:{password}\n")
        secrets.chmod(0o600)
        auth = f"auth users = {user}\nsecrets file = {secrets}\n"
    access = "read only = yes\n"
    if writable:
        access = f"read only = no\nmunge symlinks = no\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
    conf = workdir / "rsyncd.conf"
    log = workdir / "rsyncd.log"
    conf.write_text(
        f"pid file = {workdir / 'rsyncd.pid'}\nport = {port}\naddress = 127.0.0.1\nuse chroot = no\n"
        f"log file = {log}\n[mirror]\npath = {module_path}\n{access}{auth}"
    )
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "rsync daemon did not start"
                time.sleep(0.05)
        yield RsyncDaemon(f"rsync://127.0.0.1:{port}/mirror", log)
    finally:
        proc.terminate()
        proc.wait(10)
