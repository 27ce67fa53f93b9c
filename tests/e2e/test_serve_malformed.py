"""Path traversal and malformed requests, sent as raw bytes over a socket (clients would normalise them).

A secret file lies beside the export root, and symlinks inside the export point at it. For every case:
no 5xx, and the secret's content never appears in what the server sends. The server must still be healthy
afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serverproc import ServerProc, start_server
from stella_mirror.bundle.keyfiles import generate_keypair
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e

SECRET = "SECRET-" + secrets.token_hex(16)


@dataclass
class Target:
    sp: ServerProc
    secret_path: Path


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("malformed")
    secret = tmp / "secret.txt"
    secret.write_text(SECRET + "\n")
    (tmp / "index.json").write_text(SECRET)  # a file named like a served one, just outside the root
    key = generate_keypair(tmp / "keys")
    root = tmp / "concelier"
    export = publish_concelier(
        root, key, {"primary": [advisory("CVE-2024-1")], "linked": [advisory("CVE-2024-2")]}, "e1"
    )
    # Symlinks that lead outside the root, where a served file or directory would be.
    (export / "mirror" / "linked" / "bundle.json").unlink()
    (export / "mirror" / "linked" / "bundle.json").symlink_to(secret)
    (export / "mirror" / "linked" / "manifest.json").unlink()
    (export / "mirror" / "linked" / "manifest.json").symlink_to("../../../secret.txt")
    (root / "escape").symlink_to(tmp)
    (root / "escape2").mkdir()
    (root / "escape2" / "mirror").symlink_to(tmp)
    sp = start_server(
        tmp / "srv",
        env={
            "CONCELIER__MIRROR__EXPORTROOT": str(root),
            "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
            "CONCELIER__MIRROR__DOMAINS__1__ID": "linked",
            "EXCITITOR__MIRROR__ENABLED": "false",
        },
    )
    try:
        yield Target(sp, secret)
    finally:
        sp.stop()


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout). The write side stays open: an HTTP/1.1
    client does not half-close, and granian (hyper) drops a response whose client did."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(OSError):  # the server may close early on garbage; what it sent is still readable
            s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def get(path: bytes, extra: bytes = b"", method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    return method + b" " + path + b" " + version + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n"


P = b"/concelier/exports"
CASES: list[tuple[str, bytes]] = [
    ("dotdot", get(P + b"/../../secret.txt")),
    ("dotdot-deep", get(P + b"/mirror/primary/../../../../secret.txt")),
    ("dotdot-index", get(P + b"/mirror/../../index.json")),
    ("encoded-dots", get(P + b"/%2e%2e/%2e%2e/secret.txt")),
    ("encoded-dots-upper", get(P + b"/%2E%2E/%2E%2E/index.json")),
    ("mixed-dots", get(P + b"/.%2e/.%2e/secret.txt")),
    ("double-encoded", get(P + b"/%252e%252e/%252e%252e/secret.txt")),
    ("encoded-slash", get(P + b"/mirror/primary%2f..%2f..%2f..%2fsecret.txt")),
    ("encoded-slash-upper", get(P + b"/mirror%2F..%2F..%2Findex.json")),
    ("double-encoded-slash", get(P + b"/mirror/primary%252f..%252fsecret.txt")),
    ("backslash", get(P + b"/mirror/primary/..\\..\\..\\secret.txt")),
    ("encoded-backslash", get(P + b"/mirror/primary/..%5c..%5c..%5csecret.txt")),
    ("encoded-nul", get(P + b"/index.json%00.txt")),
    ("raw-nul", get(P + b"/index.json\x00")),
    ("overlong-utf8-dots", get(P + b"/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt")),
    ("raw-utf8", get(P + "/mirror/prímary/bundle.json".encode())),
    ("absolute-uri", get(b"http://127.0.0.1/../../secret.txt")),
    ("absolute-form-file", get(b"file:///etc/passwd")),
    ("double-slash-abs", get(b"//etc/passwd")),
    ("no-leading-slash", get(b"concelier/exports/index.json")),
    ("asterisk", get(b"*")),
    ("pin-dotdot", get(P + b"/@../index.json")),
    ("pin-encoded", get(P + b"/@..%2f..%2fsecret/index.json")),
    ("pin-symlink-out", get(P + b"/@escape/secret.txt")),
    ("pin-symlink-index", get(P + b"/@escape/index.json")),
    ("pin-dir-symlink", get(P + b"/@escape2/index.json")),
    ("symlinked-bundle", get(P + b"/mirror/linked/bundle.json")),
    ("symlinked-manifest", get(P + b"/mirror/linked/manifest.json")),
    ("symlinked-bundle-range", get(P + b"/mirror/linked/bundle.json", b"Range: bytes=0-10\r\n")),
    ("bad-percent", get(P + b"/%zz/%")),
    ("query-traversal", get(P + b"/index.json?path=../../secret.txt")),
    ("fragment", get(P + b"/index.json#../../secret.txt")),
    ("overlong-path-100k", get(b"/" + b"a" * 100_000)),
    ("overlong-path-dotdot", get(P + b"/" + b"../" * 30_000 + b"secret.txt")),
    ("overlong-header-100k", get(P + b"/index.json", b"X-Long: " + b"a" * 100_000 + b"\r\n")),
    ("many-headers", get(P + b"/index.json", b"".join(b"X-H%d: v\r\n" % i for i in range(2000)))),
    ("huge-if-none-match", get(P + b"/index.json", b"If-None-Match: " + b'"x",' * 5000 + b"\r\n")),
    ("garbage-ims", get(P + b"/index.json", b"If-Modified-Since: yesterday-ish\r\n")),
    ("garbage-accept-encoding", get(P + b"/index.json", b"Accept-Encoding: " + b"zstd;q=x, " * 2000 + b"\r\n")),
    ("range-negative", get(P + b"/mirror/primary/bundle.json", b"Range: bytes=--1\r\n")),
    ("range-huge", get(P + b"/mirror/primary/bundle.json", b"Range: bytes=99999999999999999999999999-\r\n")),
    ("range-many", get(P + b"/mirror/primary/bundle.json", b"Range: bytes=" + b"0-0," * 3000 + b"1-1\r\n")),
    ("range-units", get(P + b"/mirror/primary/bundle.json", b"Range: pages=1-2\r\n")),
    ("range-inverted", get(P + b"/mirror/primary/bundle.json", b"Range: bytes=100-1\r\n")),
    ("if-range-garbage", get(P + b"/mirror/primary/bundle.json", b"Range: bytes=0-1\r\nIf-Range: \x01\x02\r\n")),
    ("method-foo", get(P + b"/index.json", method=b"FOO")),
    ("method-trace", get(P + b"/index.json", method=b"TRACE")),
    ("method-connect", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    ("method-lowercase", get(P + b"/index.json", method=b"get")),
    ("method-propfind", get(P + b"/index.json", method=b"PROPFIND")),
    ("post-with-body", get(P + b"/index.json", b"Content-Length: 5\r\n", method=b"POST") + b"hello"),
    ("get-with-chunked-garbage", get(P + b"/index.json", b"Transfer-Encoding: chunked\r\n") + b"zz\r\nxx\r\n"),
    ("bad-content-length", get(P + b"/index.json", b"Content-Length: -1\r\n")),
    ("http09", b"GET /concelier/exports/index.json\r\n\r\n"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("bad-version", get(P + b"/index.json", version=b"HTTP/9.9")),
    ("http10-no-host", b"GET /concelier/exports/index.json HTTP/1.0\r\n\r\n"),
    ("duplicate-host", get(P + b"/index.json", b"Host: evil.example\r\n")),
    ("host-garbage", get(P + b"/index.json", b"Host: \xff\xfe:99999\r\n")),
    ("header-no-colon", get(P + b"/index.json", b"NoColonHere\r\n")),
    ("bare-lf", b"GET /concelier/exports/../secret.txt HTTP/1.1\nHost: x\nConnection: close\n\n"),
    ("tls-on-plain", bytes.fromhex("160301002a010000260303") + os.urandom(32)),
    ("binary-garbage", os.urandom(4096)),
]


def _status(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/"):
        return None
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("name", "request_bytes"), CASES, ids=[c[0] for c in CASES])
def test_malformed_request(target: Target, name: str, request_bytes: bytes) -> None:
    response = raw(target.sp.port, request_bytes)
    assert SECRET.encode() not in response, f"{name}: secret leaked"
    status = _status(response)
    assert status is None or status < 500, f"{name}: {response[:300]!r}"
    if name.startswith(("dotdot", "encoded", "double", "backslash", "mixed", "overlong-utf8", "pin-", "symlinked")):
        assert status in (400, 404), f"{name}: expected a refusal, got {response[:200]!r}"


def test_traversal_through_clients_too(target: Target) -> None:
    # curl and httpx normalise "..", so what they send is a different (but still refused or harmless) path.
    with httpx.Client(base_url=target.sp.base) as c:
        for path in (
            "/concelier/exports/../../secret.txt",
            "/concelier/exports/%2e%2e/secret.txt",
            "/concelier/exports/mirror/linked/bundle.json",
        ):
            r = c.get(path)
            assert r.status_code in (400, 404) and SECRET not in r.text


def test_server_still_healthy_after_the_abuse(target: Target) -> None:
    for _name, data in CASES:
        raw(target.sp.port, data, timeout=2)
    assert httpx.get(target.sp.url("/healthz")).status_code == 200
    r = httpx.get(target.sp.url("/concelier/exports/mirror/primary/manifest.json"))
    assert r.status_code == 200
    assert "Traceback" not in target.sp.stderr()
