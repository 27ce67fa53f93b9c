"""Quotas with the in-process backend: window arithmetic, bounded memory, and the answers of the production
request path (the application ``serve`` runs, called in process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mirrorsite import basic, build_site, in_process, production_app
from stella_mirror.server.app import MirrorApp
from stella_mirror.server.quotas import MemoryQuotaBackend, QuotaBackend

pytestmark = pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed")


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
        (True, 2, 60),
        (True, 1, 60),
        (True, 0, 60),
        (False, 0, 60),
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


# --- on the production request path (the app `serve` runs, in process) ---------------------------------

M = "/concelier/exports/mirror/community"
BUDGETS = {
    "CONCELIER__MIRROR__DOMAINS__1__MAXINDEXREQUESTSPERHOUR": "3",
    "CONCELIER__MIRROR__DOMAINS__1__MAXDOWNLOADREQUESTSPERHOUR": "2",
}


@pytest.fixture
def app(tmp_path: Path) -> MirrorApp:
    return production_app(build_site(tmp_path, index_budget=2, extra=BUDGETS).env)


@pytest.mark.anyio
async def test_n_plus_first_request_gets_429_with_headers(app: MirrorApp) -> None:
    async with in_process(app) as c:
        ok = [await c.get(f"{M}/manifest.json") for _ in range(3)]
        over = await c.get(f"{M}/manifest.json")
        metrics = (await c.get("/metrics")).text
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
    assert all(r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Policy"] == "3;w=3600" for r in ok)
    assert 3590 < int(ok[0].headers["RateLimit-Reset"]) <= 3600
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/problem+json"
    assert over.json()["type"] == "https://stella-ops.org/problems/quota-exceeded"
    assert over.headers["RateLimit-Remaining"] == "0" and over.headers["RateLimit-Limit"] == "3"
    assert over.headers.get_list("RateLimit-Limit") == ["3"]  # once, however many steps ran
    assert over.headers["Retry-After"] == over.headers["RateLimit-Reset"]
    assert 3590 < int(over.headers["Retry-After"]) <= 3600
    assert over.headers["cache-control"] == "no-store"
    assert 'stella_mirror_quota_rejections_total{budget="index",domain="community",product="concelier"} 1.0' in metrics


@pytest.mark.anyio
async def test_budgets_clients_and_unlimited_domains_are_separate(app: MirrorApp) -> None:
    async with in_process(app, "10.0.0.1") as a, in_process(app, "10.0.0.2") as b:
        # metadata (manifests, signatures) counts against the index budget
        statuses = [
            (await a.get(p)).status_code
            for p in (f"{M}/index.json", f"{M}/manifest.json", f"{M}/bundle.json.jws", f"{M}/index.json")
        ]
        assert statuses == [200, 200, 200, 429]
        # the download budget is separate
        downloads = [(await a.get(f"{M}/bundle.json")).status_code for _ in range(3)]
        assert downloads == [200, 200, 429]
        # another client address has its own budget
        assert (await b.get(f"{M}/index.json")).status_code == 200
        # unlimited domain: no counting, no headers; ops routes untouched
        free = [await a.get("/excititor/mirror/community/index") for _ in range(10)]
        assert {r.status_code for r in free} == {200} and "RateLimit-Limit" not in free[0].headers
        health = await a.get("/healthz")
        assert health.status_code == 200 and "RateLimit-Limit" not in health.headers


@pytest.mark.anyio
async def test_authenticated_principals_have_their_own_budget_across_addresses(app: MirrorApp) -> None:
    alice, wrong = {"Authorization": basic("alice", "pw-alice")}, {"Authorization": basic("alice", "nope")}
    p = "/concelier/exports/mirror/primary/manifest.json"  # primary: an index budget of 2, credentials required
    async with in_process(app, "10.0.0.1") as a, in_process(app, "10.0.0.2") as b:
        assert (await a.get(p, headers=wrong)).status_code == 401  # not counted
        assert (await a.get(p, headers=alice)).status_code == 200
        assert (await b.get(p, headers=alice)).status_code == 200
        assert (await b.get(p, headers=alice)).status_code == 429  # same user, shared
        # bob is anonymous on community from a and b: one budget per address
        assert (await a.get(f"{M}/manifest.json")).status_code == 200
