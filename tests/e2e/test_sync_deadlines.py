"""Deadlines, bounded work and honest errors.

* A drip-feeding upstream (one byte every 1.5 s: each read returns just before its socket timeout) fails
  within its deadline as a stalled source (exit 4) and releases the lock; under ``--watch`` a second job
  still publishes on time while the first one stalls.
* A sparse offline kit declaring a 4 GiB member is refused in under a second, before any hashing.
* A truncated kit is exit 4 (README: truncation is a source error); a file missing at the source is a source
  error (exit 4), not a local I/O one; a redirect to another origin is refused; an untrusted TLS certificate
  names the problem; a run killed with ``kill -9`` appears in the history as ``interrupted``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from stella_mirror.bundle.signing import SigningKey
from stella_mirror.publish import ExportRoot
from synctools import CLI, history, run_cli, sync_args
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e
DRIP = 1.5


@contextmanager
def drip_upstream(export_dir: Path, drip: str = "bundle.json", redirect_to: str | None = None) -> Iterator[str]:
    """A loopback upstream with a mirror's Concelier routes over ``export_dir``; files ending in ``drip`` are
    sent one byte every :data:`DRIP` seconds. With ``redirect_to``, every request is redirected there."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = self.path.removeprefix("/concelier/exports/").removeprefix(f"@{export_dir.name}/")
            rel = f"mirror/{path}" if path.startswith("index.json") else path
            file = export_dir / rel
            if not file.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Mirror-Export-Id", export_dir.name)
            self.end_headers()
            if not rel.endswith(drip):
                self.wfile.write(data)
                return
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(DRIP)
            except OSError:
                pass  # the client gave up: as it should

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_drip_feeding_upstream_fails_within_its_deadline(
    tmp_path: Path, keydir: Path, signing_key: SigningKey
) -> None:
    dest, state, key = tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    e1 = publish_concelier(tmp_path / "up", signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    with drip_upstream(e1) as url:
        started = time.monotonic()
        res = run_cli(*sync_args(url, dest, "concelier", key, state, "--timeout", "2"))
        took = time.monotonic() - started
    assert res.returncode == 4 and "[stalled]" in res.stderr, res.stderr
    assert took < 20, f"{took:.1f} s: the deadline is timeout + size / minimum rate"  # dripped whole: > 15 min
    assert history(state)[0]["outcome"] == "stalled"
    assert not (dest / "latest").exists() and not list(dest.glob(".staging-*"))
    with ExportRoot(dest).locked():  # released
        pass


def test_under_watch_a_stalled_job_does_not_delay_another(
    tmp_path: Path, keydir: Path, signing_key: SigningKey
) -> None:
    state, key = tmp_path / "state", keydir / "mirror-key.pub"
    slow, fast = tmp_path / "slow-dest", tmp_path / "fast-dest"
    e1 = publish_concelier(tmp_path / "up", signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    with drip_upstream(e1) as url:
        config = tmp_path / "sync.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "sync": {
                        "stateDir": str(state),
                        "jobs": [
                            {
                                "name": "slow",
                                "kind": "concelier",
                                "source": url,
                                "dest": str(slow),
                                "trustKeys": [str(key)],
                                "timeoutSeconds": 12,
                            },
                            {
                                "name": "fast",
                                "kind": "concelier",
                                "source": str(tmp_path / "up"),
                                "dest": str(fast),
                                "trustKeys": [str(key)],
                            },
                        ],
                    }
                }
            )
        )
        log = tmp_path / "watch.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [*CLI, "sync", "--config", config, "--watch", "--poll", "60"], stdout=out, stderr=out
            )
            started = time.monotonic()
            try:
                while not (fast / "latest").is_symlink():
                    assert time.monotonic() - started < 10, (
                        "the fast job waited for the stalled one:\n" + log.read_text()
                    )
                    time.sleep(0.1)
                while not [r for r in history(state) if r["job"] == "slow" and r["outcome"] != "running"]:
                    assert time.monotonic() - started < 40, log.read_text()
                    time.sleep(0.5)
                failed_after = time.monotonic() - started
                with ExportRoot(slow).locked():  # the stalled job released its root's lock
                    pass
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0, log.read_text()
    slow_run = next(r for r in history(state) if r["job"] == "slow")
    assert slow_run["outcome"] == "stalled" and failed_after < 30
    assert os.readlink(fast / "latest") == "e1" and not (slow / "latest").exists()


def sparse_kit(path: Path) -> Path:
    """A GNU-sparse tar whose one member declares 4 GiB of (mostly hole) data — a few KB on disk."""
    src = path.with_suffix(".src")
    with src.open("wb") as fh:
        fh.truncate(4 << 30)
        fh.write(b"x")
    subprocess.run(
        [
            "tar",
            "--sparse",
            "--format=gnu",
            "-cf",
            str(path),
            "-C",
            str(src.parent),
            src.name,
            "--transform",
            "s,^,export/mirror/primary/,",
        ],
        check=True,
    )
    src.unlink()
    return path


def test_a_sparse_kit_is_refused_at_once(tmp_path: Path, keydir: Path) -> None:
    kit = sparse_kit(tmp_path / "sparse.tar")
    assert kit.stat().st_size < 1 << 20
    started = time.monotonic()
    res = run_cli(*sync_args(str(kit), tmp_path / "dest", "concelier", keydir / "mirror-key.pub", tmp_path / "s"))
    took = time.monotonic() - started
    assert res.returncode == 14 and "sparse member" in res.stderr, res.stderr
    # The interpreter's start is most of it; hashing the declared 4 GiB took ~5 s.
    started = time.monotonic()
    assert run_cli("--help").returncode == 0
    assert took - (time.monotonic() - started) < 1.0, took


def test_truncated_kit_and_missing_files_are_source_errors(
    tmp_path: Path, keydir: Path, signing_key: SigningKey
) -> None:
    key, state = keydir / "mirror-key.pub", tmp_path / "state"
    e1 = publish_concelier(tmp_path / "pub", signing_key, {"primary": [advisory("CVE-1")] * 1}, "e1")
    kit = tmp_path / "kit.tar"
    assert run_cli("offline-kit", "create", "--from", tmp_path / "pub", "--out", kit, "--key", key).returncode == 0
    cut = tmp_path / "cut.tar"
    with tarfile.open(kit) as tar:
        last = tar.getmembers()[-1]
    cut.write_bytes(kit.read_bytes()[: last.offset_data + last.size // 2])
    res = run_cli(*sync_args(str(cut), tmp_path / "d1", "concelier", key, state))
    assert res.returncode == 4 and "truncated" in res.stderr, res.stderr

    missing = tmp_path / "missing"
    shutil.copytree(e1, missing)
    (missing / "mirror" / "primary" / "bundle.json").unlink()
    res = run_cli(*sync_args(f"file://{missing}", tmp_path / "d2", "concelier", key, state))
    assert res.returncode == 4 and "missing at the source" in res.stderr and "[missing]" in res.stderr, res.stderr
    assert history(state)[0]["outcome"] == "missing"


def test_redirects_leave_the_origin_only_when_allowed(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    key = keydir / "mirror-key.pub"
    e1 = publish_concelier(tmp_path / "up", signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    with drip_upstream(e1, drip="-none-") as real:
        other_origin = real.replace("127.0.0.1", "localhost")
        with drip_upstream(e1, redirect_to=other_origin) as redirecting:
            res = run_cli(*sync_args(redirecting, tmp_path / "d", "concelier", key, tmp_path / "s"))
            assert res.returncode == 4 and "redirect refused" in res.stderr, res.stderr
        with drip_upstream(e1, redirect_to=real) as same_host_other_port:  # another port: another origin too
            res = run_cli(*sync_args(same_host_other_port, tmp_path / "d", "concelier", key, tmp_path / "s"))
            assert res.returncode == 4 and "redirect refused" in res.stderr
        res = run_cli(*sync_args(real, tmp_path / "d", "concelier", key, tmp_path / "s"))
        assert res.returncode == 0, res.stderr


def test_an_untrusted_tls_certificate_is_named(tmp_path: Path, keydir: Path) -> None:
    cert, pkey = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-days",
            "1",
            "-keyout",
            str(pkey),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, pkey)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        res = run_cli(
            *sync_args(
                f"https://127.0.0.1:{port}", tmp_path / "d", "concelier", keydir / "mirror-key.pub", tmp_path / "s"
            )
        )
    finally:
        listener.close()
    assert res.returncode == 4 and "TLS certificate not trusted" in res.stderr and "self-signed" in res.stderr, (
        res.stderr
    )


def test_a_killed_run_is_recorded_as_interrupted_by_the_next(
    tmp_path: Path, keydir: Path, signing_key: SigningKey
) -> None:
    dest, state, key = tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    e1 = publish_concelier(tmp_path / "up", signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    with drip_upstream(e1) as url:
        proc = subprocess.Popen(
            [*CLI, *map(str, sync_args(url, dest, "concelier", key, state))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not history(state) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert history(state)[0]["outcome"] == "running"
    assert run_cli(*sync_args(str(tmp_path / "up"), dest, "concelier", key, state)).returncode == 0
    runs = history(state)
    assert [r["outcome"] for r in runs[:2]] == ["published", "interrupted"]
    assert "interrupted" in runs[1]["error"]
