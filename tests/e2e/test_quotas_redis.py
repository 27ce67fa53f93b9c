"""Quotas in a real redis-server: counting, a budget shared by two server processes, and Redis outages."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mirrorsite import COMMUNITY, build_site, in_process, production_app
from redisproc import RedisProcess, redis_server
from serverproc import ServerProc, start_server
from stella_mirror.server.quotas import RedisQuotaBackend

__all__ = ["redis_server"]  # the fixture, imported for pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed"),
]

PATH = COMMUNITY  # an open domain: anonymous requests are counted per address


def site_env(tmp: Path, redis: RedisProcess, fail_mode: str = "open", limit: int = 5) -> dict[str, str]:
    return build_site(
        tmp / "site",
        extra={
            "CONCELIER__MIRROR__DOMAINS__1__MAXINDEXREQUESTSPERHOUR": str(limit),
            "MIRROR__QUOTAS__BACKEND": "redis",
            "MIRROR__QUOTAS__REDISURL": redis.url,
            "MIRROR__QUOTAS__FAILMODE": fail_mode,
        },
    ).env


def serve(env: dict[str, str], tmp: Path, name: str = "srv") -> ServerProc:
    return start_server(tmp / name, env=env, ready_path="/readyz", access_log=False)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


# --- the backend itself -----------------------------------------------------------------------------


def test_backend_counts_in_redis_and_windows_expire(redis_server: RedisProcess) -> None:
    async def run() -> None:
        backend = RedisQuotaBackend(redis_server.url, key_prefix="t1:")
        try:
            decisions = [await backend.hit("k", 3, 2) for _ in range(4)]
            assert [(d.allowed, d.remaining) for d in decisions] == [(True, 2), (True, 1), (True, 0), (False, 0)]
            assert all(d.reset_seconds in (1, 2) and not d.degraded for d in decisions)
            other = RedisQuotaBackend(redis_server.url, key_prefix="t1:")  # another "process", same counters
            assert (await other.hit("k", 3, 2)).allowed is False
            await other.close()
            await asyncio.sleep(2.1)
            after = await backend.hit("k", 3, 2)
            assert (after.allowed, after.remaining) == (True, 2)
            assert backend.healthy
        finally:
            await backend.close()

    asyncio.run(run())


def test_concurrent_hits_are_counted_exactly_once_each(redis_server: RedisProcess) -> None:
    """A burst far above the connection pool size: every hit counted once, none degraded (atomic script, callers
    wait for a pooled connection instead of failing). The timeout is generous because this checks counting, not
    latency: 2000 hits queued on one event loop take longer than the production 0.25 s on a slow CI machine."""

    async def run() -> None:
        backend = RedisQuotaBackend(
            redis_server.url, "closed", key_prefix="t3:", timeout_seconds=10, max_connections=16
        )
        try:
            decisions = await asyncio.gather(*(backend.hit("burst", 1500, 60) for _ in range(2000)))
        finally:
            await backend.close()
        assert not any(d.degraded for d in decisions)
        assert sum(d.allowed for d in decisions) == 1500
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(1500))

    asyncio.run(run())


def test_backend_outage_is_one_warning_then_recovers(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        opened = RedisQuotaBackend(redis_server.url, "open", key_prefix="t2:", retry_interval_seconds=0.2)
        closed = RedisQuotaBackend(redis_server.url, "closed", key_prefix="t2c:", retry_interval_seconds=0.2)
        try:
            assert (await opened.hit("k", 2, 60)).allowed and (await closed.hit("k", 2, 60)).allowed
            redis_server.stop()
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                start = time.monotonic()
                during_open = [await opened.hit("k", 2, 60) for _ in range(50)]
                during_closed = [await closed.hit("k", 2, 60) for _ in range(50)]
                elapsed = time.monotonic() - start
            assert all(d.allowed and d.degraded for d in during_open)
            assert all(not d.allowed and d.degraded and d.reset_seconds >= 1 for d in during_closed)
            assert not opened.healthy and not closed.healthy
            assert elapsed < 5, f"an outage must not slow every request down ({elapsed:.2f}s for 100 hits)"
            warnings = [r for r in caplog.records if r.name.endswith("redis_backend")]
            assert len(warnings) == 2, [r.getMessage() for r in warnings]  # one per backend, not one per hit
            assert all(r.exc_info is None for r in warnings)
            assert "failing open" in warnings[0].getMessage() and "failing closed" in warnings[1].getMessage()
            redis_server.start()
            await asyncio.sleep(0.3)
            back = await opened.hit("k", 2, 60)
            assert not back.degraded and back.remaining == 1 and opened.healthy  # counting starts afresh
        finally:
            await opened.close()
            await closed.close()

    asyncio.run(run())


def test_redis_url_password_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    from redisproc import free_port

    async def run() -> None:
        backend = RedisQuotaBackend(f"redis://:hunter2@127.0.0.1:{free_port()}/0", "closed")
        with caplog.at_level(logging.WARNING):
            assert not (await backend.hit("k", 1, 60)).allowed
        await backend.close()

    asyncio.run(run())
    assert "127.0.0.1" in caplog.text and "hunter2" not in caplog.text


# --- through real servers ---------------------------------------------------------------------------


def test_n_plus_first_request_is_429_through_redis(redis_server: RedisProcess, tmp_path: Path) -> None:
    server = serve(site_env(tmp_path, redis_server, limit=3), tmp_path)
    try:
        with httpx.Client(base_url=server.base, timeout=10) as c:
            responses = [c.get(PATH) for _ in range(4)]
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    over = responses[-1]
    assert over.headers["RateLimit-Limit"] == "3" and over.headers["RateLimit-Policy"] == "3;w=3600"
    assert over.headers["Retry-After"] == over.headers["RateLimit-Reset"] and int(over.headers["Retry-After"]) > 3590
    assert over.json()["type"].endswith("/quota-exceeded")


def test_two_server_processes_share_one_budget(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = site_env(tmp_path, redis_server, limit=6)
    servers: list[ServerProc] = []
    try:
        servers = [serve(env, tmp_path, "a"), serve(env, tmp_path, "b")]
        with httpx.Client(timeout=10) as c:
            statuses, pids = [], set()
            for i in range(8):  # alternate between the two processes
                r = c.get(servers[i % 2].url(PATH))
                statuses.append(r.status_code)
                if r.status_code == 200:
                    pids.add(r.headers["x-request-id"].rsplit("-", 1)[0])  # random + pid of the worker
    finally:
        for s in servers:
            s.stop()
    assert statuses == [200] * 6 + [429, 429]
    assert len(pids) == 2  # really two processes


@pytest.mark.parametrize(("fail_mode", "outage_status"), [("open", 200), ("closed", 503)])
def test_redis_outage_and_recovery_through_a_server(
    redis_server: RedisProcess, tmp_path: Path, fail_mode: str, outage_status: int
) -> None:
    server = serve(site_env(tmp_path, redis_server, fail_mode, limit=3), tmp_path)
    try:
        with httpx.Client(base_url=server.base, timeout=10) as c:
            assert [c.get(PATH).status_code for _ in range(4)] == [200, 200, 200, 429]
            redis_server.stop()
            during = [c.get(PATH) for _ in range(10)]
            assert {r.status_code for r in during} == {outage_status}
            if fail_mode == "open":
                assert "RateLimit-Limit" not in during[0].headers  # unknown while Redis is away
            else:
                assert during[0].json()["type"].endswith("/quota-unavailable")
                assert int(during[0].headers["Retry-After"]) >= 1
            redis_server.start()
            # counting resumes (Redis came back empty: persistence is off) once the backend retries
            wait_until(lambda: "RateLimit-Remaining" in c.get(PATH).headers)
            after = [c.get(PATH) for _ in range(3)]
            assert [r.status_code for r in after] == [200, 200, 429]
            assert after[-1].headers["RateLimit-Remaining"] == "0"
    finally:
        server.stop()
    log = server.stderr()
    assert "Traceback" not in log
    assert log.count("unavailable") == 1, log  # one warning for the whole outage


def test_n_plus_first_request_is_429_through_redis_in_process(redis_server: RedisProcess, tmp_path: Path) -> None:
    """The same answers from the production app called in process (no sockets between client and app)."""
    app = production_app(site_env(tmp_path, redis_server, limit=2))

    async def run() -> list[httpx.Response]:
        try:
            async with in_process(app) as c:
                return [await c.get(PATH) for _ in range(3)]
        finally:
            await app.shutdown()

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["1", "0", "0"]
    assert responses[-1].json()["type"].endswith("/quota-exceeded")
