"""The gateway's immediate path (``Gateway.answer_now``) against the ordinary ASGI path of the same app.

The protocol writes an :class:`Immediate` answer straight from the parser callback, so it must be the very
response the ASGI path gives (same status, headers and bytes; only the request id differs), it must only
answer when it is certain (cold caches, preconditions, ``Range``, unknown credentials, a quota backend that
has to wait → None, with nothing counted), and what it answers must be logged and counted like the rest.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.config import load_config
from stella_mirror.server.app import MirrorApp, create_app
from stella_mirror.server.protocol import Immediate
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed")

SECURE = "secure.mirror.test"
INDEX = "/concelier/exports/mirror/primary/manifest.json"
"""A small file on the open domain (the index of this site depends on the caller: never immediate)."""
SECURE_FILE = "/concelier/exports/mirror/secure/manifest.json"
LIMIT = 4


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def scope(path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
          host: str = "127.0.0.1:8080", client: str = "127.0.0.1") -> dict[str, Any]:
    raw = path.encode()
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": raw, "query_string": b"", "root_path": "",
            "headers": [(b"host", host.encode()), (b"user-agent", b"test"), *(headers or [])],
            "client": (client, 40000), "server": ("127.0.0.1", 8080)}


def asgi(app: MirrorApp, sc: dict[str, Any]) -> Reply:
    """The ordinary path: the ASGI app, run to completion."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(app(sc, receive, send))
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return Reply(start["status"], list(start["headers"]), b"" if sc["method"] == "HEAD" else body)


def immediate(app: MirrorApp, sc: dict[str, Any]) -> Reply | None:
    answer = app.answer_now(sc)
    if answer is None:
        return None
    assert isinstance(answer, Immediate)
    return Reply(answer.status, [*(answer.static or ()), *answer.headers], answer.body)


def without_request_id(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in reply.headers if k != b"x-request-id"]


@dataclass
class Site:
    app: MirrorApp
    cexport: Path
    xexport: Path
    log: Path


def make_site(tmp: Path, quotas: str = "") -> Site:
    key = generate_keypair(tmp / "keys")
    advs = [advisory(f"CVE-2024-{i:04d}") for i in range(20)]
    cexport = publish_concelier(tmp / "concelier", key, {"primary": advs, "partner": advs[:2], "secure": advs[:3]},
                                "e1")
    xexport = publish_excititor(tmp / "excititor", key, {"community": {"consensus": [{"v": 1}]}}, "x1")
    htpasswd = tmp / "secure.htpasswd"
    subprocess.run(["htpasswd", "-B", "-C", "5", "-b", "-c", str(htpasswd), "alice", "pw-alice"], check=True,
                   capture_output=True)
    log = tmp / "access.log"
    cfg = tmp / "mirror.yaml"
    cfg.write_text(f"""\
concelier:
  mirror:
    exportRoot: {tmp / "concelier"}
    domains:
      - {{id: primary}}
      - {{id: partner}}
      - id: secure
        hostnames: [{SECURE}]
        requireAuthentication: true
        htpasswd: {htpasswd}
        maxIndexRequestsPerHour: {LIMIT}
excititor:
  artifacts:
    filesystem:
      root: {tmp / "excititor"}
  mirror:
    domains:
      - {{id: community}}
mirror:
  accessLog: {log}
  metrics: true
{quotas}""")
    return Site(create_app(load_config(cfg, environ={})), cexport, xexport, log)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path)
    yield s
    if s.app.sink is not None:
        s.app.sink.close()


FILES = [
    (INDEX, "mirror/primary/manifest.json", "c"),
    ("/concelier/exports/mirror/primary/bundle.json.jws", "mirror/primary/bundle.json.jws", "c"),
    ("/concelier/exports/mirror/primary/bundle.json", "mirror/primary/bundle.json", "c"),
    ("/concelier/exports/mirror/primary/bundle.json.sig", "mirror/primary/bundle.json.sig", "c"),
    ("/excititor/mirror/community/index", "mirror/community/index.json", "x"),
]


@pytest.mark.parametrize(("path", "rel", "product"), FILES)
def test_immediate_answer_is_the_asgi_answer(site: Site, path: str, rel: str, product: str) -> None:
    assert immediate(site.app, scope(path)) is None  # nothing memoised yet: the ordinary path first
    ordinary = asgi(site.app, scope(path))
    assert ordinary.status == 200
    fast = immediate(site.app, scope(path))
    assert fast is not None
    on_disk = ((site.cexport if product == "c" else site.xexport) / rel).read_bytes()
    assert fast.status == 200 and fast.body == ordinary.body == on_disk
    assert without_request_id(fast) == without_request_id(ordinary)
    assert fast.header(b"content-length") == str(len(on_disk)).encode()
    assert fast.header(b"x-request-id") and fast.header(b"x-request-id") != ordinary.header(b"x-request-id")


def test_head_has_the_get_headers_and_no_body(site: Site) -> None:
    asgi(site.app, scope(INDEX))
    get = immediate(site.app, scope(INDEX))
    head = immediate(site.app, scope(INDEX, "HEAD"))
    assert get is not None and head is not None
    assert head.body == b"" and without_request_id(head) == without_request_id(get)


@pytest.mark.parametrize("header", [
    (b"if-none-match", b'"x"'), (b"if-modified-since", b"Sun, 29 Nov 2026 00:00:00 GMT"), (b"range", b"bytes=0-9"),
])
def test_preconditions_and_ranges_take_the_ordinary_path(site: Site, header: tuple[bytes, bytes]) -> None:
    asgi(site.app, scope(INDEX))
    assert immediate(site.app, scope(INDEX)) is not None
    assert immediate(site.app, scope(INDEX, headers=[header])) is None


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/excititor/mirror/domains", "/nope",
                                  "/concelier/exports/%2e%2e/x", "/concelier/exports/mirror/ghost/bundle.json"])
def test_other_routes_and_refusals_take_the_ordinary_path(site: Site, path: str) -> None:
    asgi(site.app, scope(path))
    assert immediate(site.app, scope(path)) is None


def test_post_takes_the_ordinary_path(site: Site) -> None:
    asgi(site.app, scope(INDEX))
    assert immediate(site.app, scope(INDEX, "POST")) is None
    assert asgi(site.app, scope(INDEX, "POST")).status == 405


def secure(creds: bytes | None = None, client: str = "10.0.0.1") -> dict[str, Any]:
    headers = [(b"authorization", creds)] if creds is not None else []
    return scope(SECURE_FILE, headers=headers, host=SECURE, client=client)


def test_an_index_that_depends_on_the_caller_is_answered_immediately_once_decided(site: Site) -> None:
    """Which index a set of readable domains gets is decided by the ordinary path and remembered; then the
    immediate path answers it, byte for byte and header for header the same — filtered or a domain's own."""
    path = "/concelier/exports/index.json"
    good = basic("alice", "pw-alice")
    cases = [
        # Anonymous on the default host: primary and partner (secure is bound to its host) — filtered, unsigned.
        (scope(path), ["partner", "primary"], None),
        # alice on the secure host: the open domains refuse Basic credentials, so only secure — its own index.
        (scope(path, headers=[(b"authorization", good)], host=SECURE), ["secure"], "mirror/secure/index.json"),
    ]
    for sc, shown, own in cases:
        assert immediate(site.app, sc) is None  # undecided yet (and alice's password not verified yet)
        ordinary = asgi(site.app, sc)
        assert ordinary.status == 200 and (b"vary", b"Authorization") in ordinary.headers
        assert [d["domainId"] for d in orjson.loads(ordinary.body)["domains"]] == shown
        if own is not None:
            assert ordinary.body == (site.cexport / own).read_bytes()
        else:
            assert ordinary.header(b"x-mirror-index") == b"filtered-unsigned"
        fast = immediate(site.app, sc)
        assert fast is not None and fast.body == ordinary.body
        assert [k for k, _ in fast.headers] == [k for k, _ in ordinary.headers]
        counted = (b"ratelimit-remaining",)  # one request more was counted: the values differ by design
        assert [h for h in without_request_id(fast) if h[0] not in counted] == \
            [h for h in without_request_id(ordinary) if h[0] not in counted]
    # A filtered index has no signature: its .jws is the ordinary path's 404, never an immediate answer.
    jws = scope(path + ".jws")
    assert asgi(site.app, jws).status == 404
    assert immediate(site.app, jws) is None


def test_credentials_are_answered_immediately_only_once_verified(site: Site) -> None:
    good, bad = basic("alice", "pw-alice"), basic("alice", "wrong")
    warm = asgi(site.app, secure(good))  # the file's answer is memoised
    assert warm.status == 200 and warm.header(b"ratelimit-remaining") == str(LIMIT - 1).encode()
    assert asgi(site.app, secure()).status == 401
    assert immediate(site.app, secure()) is None  # no credentials on a domain that requires them
    assert immediate(site.app, secure(bad)) is None
    first = asgi(site.app, secure(good))
    assert first.status == 200 and first.header(b"ratelimit-remaining") == str(LIMIT - 2).encode()
    fast = immediate(site.app, secure(good))
    assert fast is not None and fast.status == 200
    assert fast.header(b"ratelimit-remaining") == str(LIMIT - 3).encode()
    assert [k for k, _ in fast.headers] == [k for k, _ in first.headers]
    assert fast.header(b"cache-control") == first.header(b"cache-control") == b"public, max-age=300, immutable"
    assert immediate(site.app, secure(bad)) is None  # a verified user with another password is not
    # …and the refused attempts did not consume anything: the next ordinary request sees LIMIT - 4 left.
    assert asgi(site.app, secure(good)).header(b"ratelimit-remaining") == str(LIMIT - 4).encode()


def test_the_quota_is_counted_once_and_429_answered_like_the_ordinary_path(site: Site) -> None:
    good = basic("alice", "pw-alice")
    assert asgi(site.app, secure(good)).status == 200
    remaining = []
    for _ in range(LIMIT - 1):
        fast = immediate(site.app, secure(good))
        assert fast is not None and fast.status == 200
        remaining.append(int(fast.header(b"ratelimit-remaining") or -1))
    assert remaining == list(range(LIMIT - 2, -1, -1))
    over = immediate(site.app, secure(good))
    assert over is not None and over.status == 429
    ordinary = asgi(site.app, secure(good))
    assert ordinary.status == 429
    assert [k for k, _ in over.headers] == [k for k, _ in ordinary.headers]
    assert orjson.loads(over.body)["type"] == orjson.loads(ordinary.body)["type"]
    assert over.header(b"retry-after") and over.header(b"ratelimit-remaining") == b"0"
    # Another client address of an authenticated user shares the user's budget; an anonymous request to the
    # open domain is not counted at all.
    assert immediate(site.app, secure(good, client="10.0.0.2")) is not None
    asgi(site.app, scope("/concelier/exports/mirror/primary/manifest.json"))
    open_answer = immediate(site.app, scope("/concelier/exports/mirror/primary/manifest.json"))
    assert open_answer is not None and open_answer.header(b"ratelimit-limit") is None


def test_a_quota_backend_that_must_wait_leaves_counted_requests_to_the_ordinary_path(tmp_path: Path) -> None:
    # Redis on a port nobody listens on: the backend fails open, but it can never count without waiting.
    site = make_site(tmp_path, "  quotas:\n    backend: redis\n    redisUrl: redis://127.0.0.1:9/0\n")
    good = basic("alice", "pw-alice")
    asgi(site.app, secure(good))
    assert immediate(site.app, secure(good)) is None
    asgi(site.app, scope(INDEX))
    assert immediate(site.app, scope(INDEX)) is not None  # uncounted requests still are immediate


def test_immediate_answers_are_logged_and_counted(site: Site) -> None:
    good = basic("alice", "pw-alice")
    asgi(site.app, secure(good))
    for _ in range(3):
        assert immediate(site.app, secure(good)) is not None
    assert site.app.sink is not None
    site.app.sink.flush()
    lines = [orjson.loads(line) for line in site.log.read_text().splitlines()]
    fast_lines = lines[-3:]
    assert all(line["status"] == 200 and line["principal"] == "alice" and line["auth"] == "basic"
               and line["domain"] == "secure" and line["route"] == "concelier.manifest" for line in fast_lines)
    assert len({line["requestId"] for line in lines}) == len(lines)
    assert "pw-alice" not in site.log.read_text()
    metrics = asgi(site.app, scope("/metrics")).body.decode()
    counted = [line for line in metrics.splitlines() if line.startswith("stella_mirror_requests_total{")
               and 'domain="secure"' in line and 'status="200"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 4.0


def test_an_unexpected_error_is_answered_500_problem_and_logged(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's last resort: a bug while answering gives a problem+json 500 that is never cached."""
    from stella_mirror.server.gateway import Gateway

    async def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Gateway, "_answer", broken)
    reply = asgi(site.app, scope("/concelier/exports/mirror/primary/manifest.json"))
    headers = dict(reply.headers)
    assert reply.status == 500
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"cache-control"] == b"no-store"
    assert int(headers[b"content-length"]) == len(reply.body)
    assert orjson.loads(reply.body)["type"].endswith("/internal")
    assert "boom" not in reply.body.decode()
