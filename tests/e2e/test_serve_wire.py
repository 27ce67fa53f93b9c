"""HTTP/1.1 on the wire: raw sockets against a real `stella-mirror serve`, for what an HTTP client library would
hide: pipelined requests answered in order (also when the client stops reading and the transport pushes back),
a request body after a GET, HTTP/1.0 and ``Connection: close``, long keep-alive runs, query
strings — each response complete and byte-exact, each request logged once.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from serverproc import ServerProc, start_server, tree_rss_kib
from stella_mirror.bundle.keyfiles import generate_keypair
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e

INDEX = "/concelier/exports/index.json"
MANIFEST = "/concelier/exports/mirror/primary/manifest.json"


@dataclass
class Site:
    sp: ServerProc
    export: Path

    def file(self, rel: str) -> bytes:
        return (self.export / rel).read_bytes()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("wire")
    key = generate_keypair(tmp / "keys")
    export = publish_concelier(tmp / "concelier", key, {"primary": [advisory(f"CVE-2024-{i:04d}") for i in range(5)]},
                               "e1")
    sp = start_server(tmp / "srv", env={
        "CONCELIER__MIRROR__EXPORTROOT": str(tmp / "concelier"),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "EXCITITOR__MIRROR__ENABLED": "false",
    }, ready_path="/readyz")
    try:
        yield Site(sp, export)
    finally:
        sp.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Conn:
    """One raw connection that reads HTTP/1.1 responses framed by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buf += chunk
        return bool(chunk)

    def read(self, head: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed before a response")
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = 0 if head else int(headers["content-length"])
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(status, headers, body)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def test_pipelined_requests_are_answered_in_order(site: Site) -> None:
    conn = Conn(site.sp.port)
    try:
        paths = [INDEX, MANIFEST, INDEX, "/concelier/exports/mirror/primary/bundle.json.sig", MANIFEST]
        for _ in range(3):  # the first round fills the memo; later rounds are answered immediately
            conn.send(b"".join(get(p) for p in paths))
            for p, rel in zip(paths, ["mirror/index.json", "mirror/primary/manifest.json", "mirror/index.json",
                                      "mirror/primary/bundle.json.sig", "mirror/primary/manifest.json"], strict=True):
                r = conn.read()
                assert r.status == 200, p
                assert r.body == site.file(rel)
    finally:
        conn.close()


def test_a_malformed_request_after_answered_ones_gets_its_400_after_their_answers(site: Site) -> None:
    conn = Conn(site.sp.port)
    try:
        conn.send(get(INDEX))
        conn.read()  # memoised now
        conn.send(get(INDEX) + get(MANIFEST) + b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
        assert conn.read().body == site.file("mirror/index.json")
        assert conn.read().body == site.file("mirror/primary/manifest.json")
        assert conn.read().status == 400
        assert conn.closed_by_peer()
    finally:
        conn.close()


def test_answers_queued_for_one_connection_go_out_before_the_ordinary_path_answers(site: Site) -> None:
    """Immediate answers are written at the end of the loop round; a request that takes the ordinary path in
    the same read (here: a conditional one, and an unknown route) must not overtake them."""
    conn = Conn(site.sp.port)
    etag_conn = Conn(site.sp.port)
    try:
        etag_conn.send(get(INDEX))
        etag = etag_conn.read().headers["etag"]
        for _ in range(20):
            conn.send(get(INDEX) + get(INDEX, f"If-None-Match: {etag}\r\n") + get(MANIFEST) + get("/nope")
                      + get(INDEX))
            assert conn.read().status == 200
            assert conn.read(head=True).status == 304
            assert conn.read().body == site.file("mirror/primary/manifest.json")
            assert conn.read().status == 404
            assert conn.read().body == site.file("mirror/index.json")
    finally:
        conn.close()
        etag_conn.close()


def test_a_client_that_stops_reading_still_gets_every_response_in_order(site: Site) -> None:
    """Thousands of pipelined requests sent before reading one byte: the server's writes back up, it must
    stop answering immediately and queue, then finish every response in order."""
    conn = Conn(site.sp.port)
    index, manifest = site.file("mirror/index.json"), site.file("mirror/primary/manifest.json")
    try:
        n = 3000
        conn.send(b"".join(get(INDEX if i % 2 == 0 else MANIFEST) for i in range(n)))
        time.sleep(0.5)  # let the server run into back-pressure
        for i in range(n):
            r = conn.read()
            assert r.status == 200
            assert r.body == (index if i % 2 == 0 else manifest), i
    finally:
        conn.close()


def test_a_request_body_after_an_immediate_answer_is_not_taken_for_a_request(site: Site) -> None:
    conn = Conn(site.sp.port)
    try:
        for _ in range(2):
            conn.send(get(INDEX, "Content-Length: 30\r\n") + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.read().body == site.file("mirror/index.json")
        conn.send(get(MANIFEST))
        assert conn.read().body == site.file("mirror/primary/manifest.json")
    finally:
        conn.close()


@pytest.mark.parametrize(("request_bytes", "head"), [
    (get(INDEX, version="1.0"), False),
    (get(INDEX, "Connection: close\r\n"), False),
    (f"HEAD {INDEX} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode(), True),
])
def test_connections_the_client_closes_are_answered_then_closed(site: Site, request_bytes: bytes,
                                                                 head: bool) -> None:
    warm = Conn(site.sp.port)
    try:
        warm.send(get(INDEX))
        warm.read()
    finally:
        warm.close()
    conn = Conn(site.sp.port)
    try:
        conn.send(request_bytes)
        r = conn.read(head=head)
        assert r.status == 200
        assert r.body == (b"" if head else site.file("mirror/index.json"))
        assert r.headers["content-length"] == str(len(site.file("mirror/index.json")))
        assert conn.closed_by_peer()
    finally:
        conn.close()


def test_a_long_keep_alive_run_is_answered_and_logged_once_per_request(site: Site) -> None:
    index = site.file("mirror/index.json")
    marker = "immediate-run"
    c = http.client.HTTPConnection("127.0.0.1", site.sp.port, timeout=10)
    try:
        n = 300
        for i in range(n):
            c.request("GET", INDEX + ("?x=1" if i % 3 == 0 else ""), headers={"User-Agent": marker})
            r = c.getresponse()
            assert r.status == 200 and r.read() == index
            assert r.getheader("Cache-Control") == "public, max-age=60"
            assert r.getheader("ETag") and r.getheader("Date") and r.getheader("X-Request-ID")
    finally:
        c.close()
    deadline = time.monotonic() + 5
    ours: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        ours = [orjson.loads(line) for line in site.sp.access_lines() if marker in line]
        if len(ours) >= n:
            break
        time.sleep(0.2)
    assert len(ours) == n
    assert {line["status"] for line in ours} == {200}
    assert {line["route"] for line in ours} == {"concelier.index"}
    assert len({line["requestId"] for line in ours}) == n
    assert all(line["bytes"] == len(index) for line in ours)


@pytest.mark.parametrize("extra", ["", 'If-None-Match: "not-this-one"\r\n'], ids=["plain", "conditional"])
def test_a_client_that_never_reads_cannot_make_the_server_buffer_without_bound(site: Site, extra: str) -> None:
    """Pipelined requests whose responses would be ~300 MB: once the client's socket is full the server must
    stop answering (and reading) instead of piling up responses — or parsed requests — in memory. Plain GETs
    are answered immediately; conditional ones take the ordinary path, whose queue of pipelined requests
    uvicorn alone would let grow by a whole read per response."""
    conn = Conn(site.sp.port)
    conn.send(get(INDEX))
    conn.read()  # the answer is memoised: the rest would be immediate
    before = tree_rss_kib(site.sp.proc.pid)
    batch = get(INDEX, extra) * 1000
    sent = 0
    conn.sock.settimeout(0.5)
    try:
        for _ in range(120):  # 120,000 requests at most; the server stops reading long before
            try:
                conn.sock.sendall(batch)
            except TimeoutError:
                break
            sent += 1000
        time.sleep(0.5)
        growth_mib = (tree_rss_kib(site.sp.proc.pid) - before) / 1024
        # (Kernel socket buffers may absorb all the requests, so how many were sent says little; memory does.)
        assert growth_mib < 64, f"server grew by {growth_mib:.0f} MiB with {sent} requests sent"
    finally:
        conn.close()
    # …and it still serves everyone else.
    other = Conn(site.sp.port)
    try:
        other.send(get(INDEX))
        assert other.read().body == site.file("mirror/index.json")
    finally:
        other.close()


def test_idle_keep_alive_connections_are_closed_after_the_timeout_and_busy_ones_are_not(
        site: Site, tmp_path: Path) -> None:
    env = {k: v for k, v in site.sp.env.items() if k.startswith(("CONCELIER__", "EXCITITOR__"))}
    sp = start_server(tmp_path / "srv", env={**env, "MIRROR__KEEPALIVESECONDS": "1"}, ready_path="/readyz")
    try:
        busy, idle = Conn(sp.port), Conn(sp.port)
        try:
            idle.send(get(INDEX))
            assert idle.read().status == 200
            started = time.monotonic()
            for _ in range(8):  # a request every 0.35 s for ~2.8 s: never idle for the whole second
                busy.send(get(INDEX))
                assert busy.read().status == 200
                time.sleep(0.35)
            assert idle.closed_by_peer()  # closed by now (recv sees the end at once)
            assert time.monotonic() - started >= 0.9
            busy.send(get(MANIFEST))
            assert busy.read().body == site.file("mirror/primary/manifest.json")
            time.sleep(1.6)
            assert busy.closed_by_peer()  # and once it is idle, it is closed too
        finally:
            busy.close()
            idle.close()
    finally:
        sp.stop()
