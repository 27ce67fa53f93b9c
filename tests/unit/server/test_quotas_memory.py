"""Quotas with the in-process backend: window arithmetic, bounded memory, and the middleware's answers."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from gateway_app import build_app
from stella_mirror.server.authn import Authenticator, AuthSettings
from stella_mirror.server.context import DomainPolicy
from stella_mirror.server.quotas import MemoryQuotaBackend, QuotaBackend


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_fixed_window_counts_and_resets() -> None:
    clock = Clock()
    backend = MemoryQuotaBackend(clock=clock)
    assert isinstance(backend, QuotaBackend)
    decisions = [await backend.hit("k", 3, 60) for _ in range(4)]
    assert [(d.allowed, d.remaining, d.reset_seconds) for d in decisions] == [
        (True, 2, 60), (True, 1, 60), (True, 0, 60), (False, 0, 60)
    ]
    clock.now += 59.2
    refused = await backend.hit("k", 3, 60)
    assert (refused.allowed, refused.reset_seconds) == (False, 1)  # ceil(0.8)
    other = await backend.hit("other", 3, 60)
    assert (other.allowed, other.remaining) == (True, 2)  # keys are independent
    clock.now += 1
    fresh = await backend.hit("k", 3, 60)
    assert (fresh.allowed, fresh.remaining, fresh.reset_seconds) == (True, 2, 60)


@pytest.mark.anyio
async def test_memory_is_bounded() -> None:
    clock = Clock()
    backend = MemoryQuotaBackend(max_keys=50, clock=clock)
    for i in range(200):
        await backend.hit(f"ip:{i}", 10, 60)
    assert len(backend) == 50  # oldest windows forgotten past the cap
    clock.now += 61
    for i in range(40):  # every hit also drops a few expired windows from the front
        await backend.hit(f"new:{i}", 10, 60)
    assert len(backend) <= 50 and all(k.startswith("new:") for k in backend._windows)


# --- through the middleware ---------------------------------------------------------------------------


DOMAIN = DomainPolicy("concelier", "primary", max_index_requests_per_hour=3, max_download_requests_per_hour=2)
UNLIMITED = DomainPolicy("excititor", "vex")


def gateway(domains: list[DomainPolicy], auth: Authenticator | None = None, window: int = 3600):  # type: ignore[no-untyped-def]
    return build_app(domains, auth or Authenticator(AuthSettings(), domains), MemoryQuotaBackend(), window)


def client(app, ip: str = "10.0.0.1") -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 1234)), base_url="http://mirror")


@pytest.mark.anyio
async def test_n_plus_first_request_gets_429_with_headers() -> None:
    gw = gateway([DOMAIN])
    async with client(gw.app) as c:
        ok = [await c.get("/concelier/primary/index/index.json") for _ in range(3)]
        over = await c.get("/concelier/primary/index/index.json")
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
    assert all(r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Policy"] == "3;w=3600" for r in ok)
    assert 3590 < int(ok[0].headers["RateLimit-Reset"]) <= 3600
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/problem+json"
    assert over.json()["type"] == "https://stella-ops.org/problems/quota-exceeded"
    assert over.headers["RateLimit-Remaining"] == "0" and over.headers["RateLimit-Limit"] == "3"
    assert over.headers["Retry-After"] == over.headers["RateLimit-Reset"]
    assert 3590 < int(over.headers["Retry-After"]) <= 3600
    assert gw.rejects == {"primary": 1}


@pytest.mark.anyio
async def test_budgets_clients_and_unlimited_domains_are_separate() -> None:
    gw = gateway([DOMAIN, UNLIMITED])
    async with client(gw.app, "10.0.0.1") as a, client(gw.app, "10.0.0.2") as b:
        # metadata (manifests, signatures) counts against the index budget
        statuses = [(await a.get(p)).status_code for p in (
            "/concelier/primary/index/index.json", "/concelier/primary/metadata/m.json",
            "/concelier/primary/metadata/m.json.jws", "/concelier/primary/index/index.json")]
        assert statuses == [200, 200, 200, 429]
        # the download budget is separate
        downloads = [(await a.get("/concelier/primary/download/bundle.json")).status_code for _ in range(3)]
        assert downloads == [200, 200, 429]
        # another client address has its own budget
        assert (await b.get("/concelier/primary/index/index.json")).status_code == 200
        # unlimited domain: no counting, no headers; ops routes untouched
        free = [await a.get("/excititor/vex/download/x") for _ in range(10)]
        assert {r.status_code for r in free} == {200} and "RateLimit-Limit" not in free[0].headers
        health = await a.get("/healthz")
        assert health.status_code == 200 and "RateLimit-Limit" not in health.headers


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed")
@pytest.mark.anyio
async def test_authenticated_principals_have_their_own_budget_across_addresses(tmp_path: Path) -> None:
    path = tmp_path / "p.htpasswd"
    subprocess.run(["htpasswd", "-B", "-c", "-b", str(path), "alice", "pw"], check=True, capture_output=True)
    domain = DomainPolicy("concelier", "primary", htpasswd=path, max_index_requests_per_hour=2)
    gw = gateway([domain])
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    async with client(gw.app, "10.0.0.1") as a, client(gw.app, "10.0.0.2") as b:
        assert (await a.get("/concelier/primary/index/i", headers=wrong)).status_code == 401  # not counted
        assert (await a.get("/concelier/primary/index/i", headers=alice)).status_code == 200
        assert (await b.get("/concelier/primary/index/i", headers=alice)).status_code == 200
        assert (await b.get("/concelier/primary/index/i", headers=alice)).status_code == 429  # same user, shared
        assert (await a.get("/concelier/primary/index/i")).status_code == 200  # anonymous from a: its own budget


@pytest.mark.anyio
async def test_downstream_ratelimit_headers_are_replaced_not_duplicated() -> None:
    from starlette.responses import Response

    from stella_mirror.server.context import CONTEXT_KEY, RequestContext
    from stella_mirror.server.middleware.quotas import QuotaMiddleware

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        await Response("x", headers={"RateLimit-Limit": "999", "X-Other": "1"})(scope, receive, send)

    async def with_ctx(scope, receive, send):  # type: ignore[no-untyped-def]
        scope[CONTEXT_KEY] = RequestContext("r1", "concelier", DOMAIN, "index", client="1.2.3.4")
        await mw(scope, receive, send)

    backend = MemoryQuotaBackend()
    mw = QuotaMiddleware(inner, lambda: backend, window_seconds=60)
    async with client(with_ctx) as c:
        r = await c.get("/")
        assert (await c.get("/")).headers["RateLimit-Remaining"] == "1"
    assert r.headers.get_list("RateLimit-Limit") == ["3"] and r.headers["X-Other"] == "1"
    assert r.headers["RateLimit-Policy"] == "3;w=60"
