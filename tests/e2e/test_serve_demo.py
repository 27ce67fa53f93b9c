"""``stella-mirror demo``: builds a signed mirror of the samples, serves it, and its printed smoke commands
(runbook §6 adapted: curl + jq, openssl instead of cosign, stella-mirror verify) run as printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serverproc import CLI, free_port, hermetic_env
from stella_mirror.demo import SMOKE_BEGIN, SMOKE_END

pytestmark = pytest.mark.e2e


def test_demo_serves_and_its_smoke_commands_work_as_printed(tmp_path: Path) -> None:
    port = free_port()
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([*CLI, "demo", "--port", str(port), "--dir", str(tmp_path / "demo")],
                                env=hermetic_env({}), stdout=out, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, err_path.read_text()
            if "Serving on" in out_path.read_text():
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"demo did not become ready:\n{err_path.read_text()}")
        printed = out_path.read_text()
        password = re.search(r"password '([^']+)'", printed)
        assert password, printed
        block = printed[printed.index(SMOKE_BEGIN): printed.index(SMOKE_END) + len(SMOKE_END)]
        assert f"http://127.0.0.1:{port}" in block
        env = hermetic_env({"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")})
        smoke = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True,
                               timeout=120)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert '"domains"' in smoke.stdout and '"exportId"' in smoke.stdout  # jq 'keys' of the index
        assert "HTTP/1.1 200" in smoke.stdout and "cache-control: max-age=300, must-revalidate" in smoke.stdout
        assert '"consensus"' in smoke.stdout  # Excititor export keys
        assert "Verified OK" in smoke.stdout  # openssl on the .sig
        assert "bundle digest matches the signed index" in smoke.stdout
        assert "\n401\n" in smoke.stdout
        assert smoke.stdout.count("OK concelier export") == 1 and smoke.stdout.count("OK excititor export") == 1
        # The password is random per run and never lands in the access log.
        log = (tmp_path / "demo" / "access.log")
        deadline = time.monotonic() + 3
        while (not log.exists() or '"principal":"demo"' not in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert '"principal":"demo"' in log.read_text()
        assert password.group(1) not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_demo_on_a_busy_port_says_so_first_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """Issue 19: no password, no smoke commands aimed at whatever holds the port, no "Serving on", no temp directory
    with a private key — one error line suggesting --port, exit 3."""
    import socket

    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = subprocess.run([*CLI, "demo", "--port", str(port)], env=hermetic_env({"TMPDIR": str(temp)}),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stdout == ""
    line = " ".join(res.stderr.split())
    assert f"error [config] --port: cannot listen on 127.0.0.1:{port}" in line
    assert re.search(r"choose another port, e\.g\. --port \d+", line)
    assert list(temp.iterdir()) == []


def test_a_demo_that_fails_after_building_removes_its_temp_directory(tmp_path: Path) -> None:
    """The port is taken by someone else while the demo builds (after its check): serving fails, and the temp
    directory it made — the demo's private key included — is gone."""
    import socket
    import threading

    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    grabbed = threading.Event()
    stop = threading.Event()
    thief = socket.socket()

    def grab_when_built() -> None:
        while not stop.is_set():
            if any(temp.iterdir()):  # the demo made its directory: it checked the port already
                thief.bind(("127.0.0.1", port))
                thief.listen(1)
                grabbed.set()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=grab_when_built)
    watcher.start()
    try:
        res = subprocess.run([*CLI, "demo", "--port", str(port)], env=hermetic_env({"TMPDIR": str(temp)}),
                             capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        watcher.join()
        thief.close()
    assert grabbed.is_set()
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert list(temp.iterdir()) == []
