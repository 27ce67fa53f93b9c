"""Start ``stella-mirror serve`` as a real subprocess on a free loopback port and wait until it answers.

Used by the e2e tests of the server: the environment is hermetic (our own ``CONCELIER__``/``EXCITITOR__``/
``AUTHORITY__``/``MIRROR__`` variables of the calling shell are dropped), the access log goes to a file in
the test's temp directory, and :meth:`ServerProc.stop` always terminates the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CLI = [sys.executable, "-c", "from stella_mirror.cli.main import main; main()"]
"""The CLI as a command line (the console script may not be on PATH in every environment)."""

OUR_PREFIXES = ("CONCELIER__", "EXCITITOR__", "AUTHORITY__", "MIRROR__")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of a process and all its descendants: ``serve``'s supervisor and its workers."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        status = Path(f"/proc/{p}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def hermetic_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(OUR_PREFIXES)}
    env.pop("STELLA_MIRROR_CONFIG", None)
    env.update(extra)
    return env


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    scheme: str = "http"
    access_log: Path | None = None
    pid_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def stderr(self) -> str:
        return (self.workdir / "stderr.log").read_text(errors="replace")

    def stdout(self) -> str:
        return (self.workdir / "stdout.log").read_text(errors="replace")

    def access_lines(self) -> list[str]:
        assert self.access_log is not None
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def _wait_ready(sp: ServerProc, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    verify: ssl.SSLContext | bool = sp.scheme != "https"
    while time.monotonic() < deadline:
        if sp.proc.poll() is not None:
            raise RuntimeError(f"server exited with {sp.proc.returncode}:\n{sp.stderr()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(sp.url(path), timeout=1, verify=verify).status_code < 500:
                return
        time.sleep(0.05)
    sp.stop()
    raise RuntimeError(f"server did not answer {path} within {timeout}s:\n{sp.stderr()}")


def start_server(
    workdir: Path,
    env: Mapping[str, str] | None = None,
    config: Path | None = None,
    args: list[str] | None = None,
    scheme: str = "http",
    ready_path: str = "/healthz",
    timeout: float = 30,
    access_log: bool = True,
) -> ServerProc:
    """Start the server; raises with its stderr when it does not come up."""
    workdir.mkdir(parents=True, exist_ok=True)
    extra = dict(env or {})
    log_path = workdir / "access.log"
    if access_log:
        extra.setdefault("MIRROR__ACCESSLOG", str(log_path))
    pid_file = workdir / "server.pid"
    for attempt in range(3):
        port = free_port()
        cmd = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port),
               "--pid-file", str(pid_file)]
        if config is not None:
            cmd += ["--config", str(config)]
        cmd += args or []
        full_env = hermetic_env(extra)
        with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
            proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=err, start_new_session=True)
        sp = ServerProc(proc, port, workdir, scheme, log_path if access_log else None, pid_file, full_env)
        try:
            _wait_ready(sp, ready_path, timeout)
            return sp
        except RuntimeError:
            if "cannot listen" in sp.stderr() and attempt < 2:
                continue
            raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running(workdir: Path, **kwargs: object) -> Iterator[ServerProc]:
    """``with running(tmp_path / "srv", env=...) as sp:`` — always stopped afterwards."""
    sp = start_server(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield sp
    finally:
        sp.stop()
