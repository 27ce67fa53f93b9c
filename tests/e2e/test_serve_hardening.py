"""Hostile clients against the real ``stella-mirror serve`` process on loopback: request limits (431), idle and
slow sockets, Upgrade, slow readers of a large bundle, ``/status`` costs and rate limit, ``/metrics`` reasons
and token, what the domain list and ``/status.json`` reveal to whom, and the descriptor limit at start."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from mirrorsite import PRIMARY, Site, basic, build_site
from serverproc import CLI, ServerProc, hermetic_env, start_server, tree_rss_kib

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed"),
]

TOKEN = "metrics-token-0123456789abcdef"
BUNDLE = "/concelier/exports/mirror/community/bundle.json"
BIG = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, ServerProc]]:
    tmp = tmp_path_factory.mktemp("hardening")
    (tmp / "metrics.token").write_text(TOKEN + "\n")
    site = build_site(
        tmp,
        extra={
            "MIRROR__KEEPALIVESECONDS": "2",
            "MIRROR__LIMITS__MAXHEADERBYTES": "16384",
            "MIRROR__LIMITS__METRICSTOKENFILE": str(tmp / "metrics.token"),
            "MIRROR__LIMITS__STATUSREQUESTSPERMINUTE": "1000",
            "MIRROR__ACCESSLOG": str(tmp / "access.log"),
        },
    )
    # A large file where a bundle is: what the server does with 20 MB is what matters here, not its content.
    bundle = tmp / "concelier" / "e1" / "mirror" / "community" / "bundle.json"
    with bundle.open("wb") as out:
        for _ in range(BIG // (1 << 20)):
            out.write(b"0" * (1 << 20))
    sp = start_server(tmp / "srv", env=site.env, ready_path="/readyz", access_log=False)
    try:
        yield site, sp
    finally:
        sp.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def test_request_line_header_block_and_header_count_are_limited(served: tuple[Site, ServerProc]) -> None:
    _, sp = served
    head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
    assert status_of(exchange(sp.port, head + b"\r\n")) == 200
    assert status_of(exchange(sp.port, head + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")) == 431
    assert status_of(exchange(sp.port, head + b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n")) == 431
    assert status_of(exchange(sp.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")) == 431
    # a 48 MB header block is cut off at the limit, not read into memory
    with socket.create_connection(("127.0.0.1", sp.port), timeout=5) as s:
        s.sendall(head)
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 48 << 20:
                s.sendall(b"X-Flood: " + b"b" * 65000 + b"\r\n")
                sent += 65011
    assert sent < 8 << 20, "the server kept reading an endless header block"
    assert httpx.get(sp.url("/healthz")).status_code == 200


def test_upgrade_requests_are_refused(served: tuple[Site, ServerProc]) -> None:
    _, sp = served
    ws = (
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = exchange(sp.port, ws, timeout=3)
    assert status_of(response) == 400 and b"upgrade-refused" in response
    h2c = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    assert status_of(exchange(sp.port, h2c, timeout=3)) == 400
    assert "Traceback" not in sp.stderr() and " 500 " not in sp.stderr()


def test_idle_and_slow_sockets_neither_delay_others_nor_stay(served: tuple[Site, ServerProc]) -> None:
    """200 sockets that send nothing and 50 that send a header byte every half second (slowloris): other clients
    are answered as usual, and the server closes them all within keepAliveSeconds (2 s) of their last request."""
    _, sp = served
    idle = [socket.create_connection(("127.0.0.1", sp.port), timeout=10) for _ in range(200)]
    slow = [socket.create_connection(("127.0.0.1", sp.port), timeout=10) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
        latencies = []
        with httpx.Client(base_url=sp.base, timeout=5) as c:
            started = time.monotonic()
            while time.monotonic() - started < 3.0:
                t = time.perf_counter()
                assert c.get("/concelier/exports/mirror/community/manifest.json").status_code == 200
                latencies.append(time.perf_counter() - t)
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.sendall(b"X")
                time.sleep(0.05)
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.1 and latencies[-1] < 1.0, latencies[-5:]
        deadline = time.monotonic() + 3
        for s in idle + slow:
            assert _closed_by(s, deadline), "a socket that sent no complete request head was kept open"
    finally:
        for s in idle + slow:
            s.close()


def _closed_by(s: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``s`` before ``deadline`` (whatever it says first)."""
    while True:
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if s.recv(4096) == b"":
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def test_slow_readers_of_a_large_bundle_cost_bounded_memory(served: tuple[Site, ServerProc]) -> None:
    """150 clients that take a 20 MB bundle and barely read: each costs a bounded buffer, not the file; a second
    wave reuses what the first one left (the memory is not lost)."""
    _, sp = served
    request = f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    with httpx.Client(base_url=sp.base, timeout=30) as c:
        assert len(c.get(BUNDLE).content) == BIG  # its digest (the ETag) is computed once, before measuring
    before = tree_rss_kib(sp.proc.pid) / 1024
    peaks = []
    for _ in range(2):
        readers = []
        for _ in range(150):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect(("127.0.0.1", sp.port))
            s.sendall(request)
            readers.append(s)
        assert all(s.recv(1) == b"H" for s in readers)
        time.sleep(3)
        peaks.append(tree_rss_kib(sp.proc.pid) / 1024 - before)
        for s in readers:
            s.close()
        time.sleep(2)
    assert peaks[0] < 50, f"150 slow readers added {peaks[0]:.0f} MiB ({peaks})"
    assert peaks[1] < peaks[0] + 10, f"a second wave grew again: {peaks}"
    with httpx.Client(base_url=sp.base, timeout=30) as c:
        assert len(c.get(BUNDLE).content) == BIG  # and the file is still served whole


def test_metrics_one_failure_reason_and_its_token(served: tuple[Site, ServerProc]) -> None:
    _, sp = served
    with httpx.Client(base_url=sp.base, timeout=10) as c:
        assert c.get(PRIMARY, headers={"Authorization": basic("alice", "wrong")}).status_code == 401
        assert c.get(PRIMARY, headers={"Authorization": basic("nobody-here", "wrong")}).status_code == 401
        anonymous = c.get("/metrics")
        assert anonymous.status_code == 401 and anonymous.json()["type"].endswith("/unauthorized")
        assert c.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"}).status_code == 401
        text = c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    reasons = {
        line.split('reason="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("stella_mirror_auth_failures_total{") and 'domain="primary"' in line
    }
    assert reasons == {"bad-credentials"}, reasons  # unknown user and wrong password look the same


def bearer(site: Site, scope: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + site.issuer.mint(scope=scope)}


def test_excititor_domain_list_shows_only_readable_domains(served: tuple[Site, ServerProc]) -> None:
    site, sp = served
    with httpx.Client(base_url=sp.base, timeout=10) as c:
        anonymous = c.get("/excititor/mirror/domains")
        reader = c.get("/excititor/mirror/domains", headers=bearer(site, "excititor.mirror.read"))
    assert anonymous.status_code == 200 and reader.status_code == 200
    assert [d["domainId"] for d in anonymous.json()["domains"]] == ["community"]
    assert "primary" not in anonymous.text  # no exportKeys, sequence or exportId of the auth-only domain
    assert sorted(d["domainId"] for d in reader.json()["domains"]) == ["community", "primary"]
    assert anonymous.headers["vary"] == "Authorization"


def test_status_json_shows_paths_only_to_who_may_read_everything(served: tuple[Site, ServerProc]) -> None:
    site, sp = served
    with httpx.Client(base_url=sp.base, timeout=10) as c:
        anonymous = c.get("/status.json")
        alice = c.get("/status.json", headers={"Authorization": basic("alice", "pw-alice")})
        reader = c.get("/status.json", headers=bearer(site, "concelier.mirror.read excititor.mirror.read"))
    assert anonymous.status_code == 200 and str(site.root) not in anonymous.text
    assert all(r["root"] is None for r in anonymous.json()["roots"])
    # alice's credential opens primary but is refused by community (bob's file): not every domain, no paths
    assert alice.status_code == 200 and str(site.root) not in alice.text
    # a token with both products' scopes reads every domain: the roots are shown
    assert {r["root"] for r in reader.json()["roots"]} == {str(site.root / "concelier"), str(site.root / "excititor")}


def test_status_costs_one_credential_check_and_is_rate_limited(tmp_path: Path) -> None:
    """bcrypt at cost 12 in two htpasswd files, four domains: a made-up credential costs /status one check (it
    used to cost one per domain), a repeated one none; past statusRequestsPerMinute the answer is 429."""
    site = build_site(tmp_path, cost=12, extra={"MIRROR__LIMITS__STATUSREQUESTSPERMINUTE": "6"})
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(12))
    one_check = min(_timed(lambda: bcrypt.checkpw(b"pw", hashed)) for _ in range(3))
    sp = start_server(tmp_path / "srv", env=site.env, ready_path="/healthz", access_log=False)
    try:
        with httpx.Client(base_url=sp.base, timeout=30) as c:
            assert c.get("/status.json").status_code == 200  # warm up (imports, first index reads)
            fresh = [
                _timed(lambda i=i: c.get("/status.json", headers={"Authorization": basic(f"m{i}", "x")}))
                for i in range(2)
            ]
            # the same credential again: one check per htpasswd file not yet asked, then none at all
            repeated = [
                _timed(lambda: c.get("/status.json", headers={"Authorization": basic("m0", "x")})) for _ in range(2)
            ]
            statuses = [c.get("/status.json").status_code for _ in range(3)]
    finally:
        sp.stop()
    assert min(fresh) < 2.5 * one_check, (fresh, one_check)  # one check, not four
    assert repeated[-1] < 0.5 * one_check, (repeated, one_check)  # the failures are remembered
    assert statuses == [200, 429, 429], statuses  # 6 per minute: warm-up, 2 fresh, 2 repeated, then this


def _timed(call: object) -> float:
    start = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - start


def test_too_few_file_descriptors_refuse_to_start(tmp_path: Path) -> None:
    """A hard RLIMIT_NOFILE below maxConnections + headroom is a configuration error at start (exit 3)."""
    cmd = " ".join([*CLI[:2], json.dumps(CLI[2]), "serve", "--port", "0"])
    run = subprocess.run(
        ["bash", "-c", f"ulimit -n 256 && exec {cmd}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=hermetic_env({"MIRROR__LIMITS__MAXCONNECTIONS": "1000", "MIRROR__ACCESSLOG": "off"}),
    )
    assert run.returncode == 3, run.stderr
    assert "mirror.limits.maxConnections" in run.stderr and "256" in run.stderr


def test_access_log_marks_aborted_responses_on_the_tls_server(tmp_path: Path) -> None:
    """With TLS, ``serve`` runs uvicorn, whose body path waits for the client: a client that takes 100 KB of the
    20 MB bundle and leaves is logged as aborted with the bytes that went out, one that reads it all whole.
    (On plain HTTP, granian takes a whole body at once — pathsend, or a Range part — and does not report how much
    arrived: the line shows what it took; docs/auth-and-quotas.md, "Limits".)"""
    site = build_site(tmp_path, extra={"MIRROR__ACCESSLOG": str(tmp_path / "access.log")})
    bundle = tmp_path / "concelier" / "e1" / "mirror" / "community" / "bundle.json"
    bundle.write_bytes(b"0" * BIG)
    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    env = {**site.env, "MIRROR__TLS__CERTFILE": str(crt), "MIRROR__TLS__KEYFILE": str(key)}
    sp = start_server(tmp_path / "srv", env=env, scheme="https", access_log=False)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        request = f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\nX-Request-ID: left-early\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", sp.port), timeout=10) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with ctx.wrap_socket(raw) as s:
                s.sendall(request)
                got = 0
                while got < 100_000:
                    got += len(s.recv(65536))
        with httpx.Client(base_url=sp.base, timeout=60, verify=False) as c:
            assert len(c.get(BUNDLE, headers={"X-Request-ID": "read-all"}).content) == BIG
        lines = _log_lines(tmp_path / "access.log", ("left-early", "read-all"))
    finally:
        sp.stop()
    assert lines["read-all"]["bytes"] == BIG and "aborted" not in lines["read-all"]
    assert lines["left-early"]["aborted"] is True, lines["left-early"]
    assert int(lines["left-early"]["bytes"]) < BIG // 2  # type: ignore[call-overload]


def _log_lines(path: Path, ids: tuple[str, ...]) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + 15
    lines: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline and len(lines) < len(ids):
        time.sleep(0.5)
        for line in path.read_text().splitlines() if path.exists() else []:
            record = json.loads(line)
            if record["requestId"] in ids:
                lines[str(record["requestId"])] = record
    return lines
