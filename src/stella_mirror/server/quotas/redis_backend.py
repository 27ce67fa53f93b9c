"""Quota counting in Redis, shared by every server process and replica that points at the same instance.

One round trip per hit: a Lua script does INCR, sets the window's expiry on the first hit, and returns the
count with the remaining time-to-live, atomically. Windows are Redis key expiries, so all processes agree
on them without synchronised clocks.

Redis being unreachable (refused, timed out, erroring) never fails a request with a traceback: the backend
answers by its ``fail_mode`` — ``"open"`` lets requests through, ``"closed"`` refuses them — with a
``degraded`` decision, logs one warning per ``log_interval_seconds``, and stops trying for
``retry_interval_seconds`` so an outage does not add a timeout to every request. The next attempt after that
reconnects by itself (redis-py's pool opens a fresh connection).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from stella_mirror.server.quotas.backend import QuotaDecision

log = logging.getLogger(__name__)

FailMode = Literal["open", "closed"]

# KEYS[1] = counter key, ARGV[1] = window in milliseconds. Returns {count, milliseconds left}.
# The PTTL < 0 branch repairs a counter that lost its expiry (e.g. written by hand), so no key lives forever.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = -1
if count > 1 then ttl = redis.call('PTTL', KEYS[1]) end
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def redact_redis_url(url: str) -> str:
    """``redis://host:port/db`` without the password: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class RedisQuotaBackend:
    """Fixed windows anchored at each key's first hit, counted in Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        fail_mode: FailMode = "open",
        key_prefix: str = "stella-mirror:quota:",
        timeout_seconds: float = 0.25,
        *,
        retry_interval_seconds: float = 1.0,
        max_connections: int = 64,
        log_interval_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fail_mode not in ("open", "closed"):
            raise ValueError(f"fail_mode must be 'open' or 'closed', not {fail_mode!r}")
        self.fail_mode: FailMode = fail_mode
        self.key_prefix = key_prefix
        self.timeout = timeout_seconds
        self._retry_interval = retry_interval_seconds
        self._log_interval = log_interval_seconds
        self._clock = clock
        self._where = redact_redis_url(url)
        # A blocking pool: a burst of concurrent requests waits (within the timeout) for one of
        # ``max_connections`` connections instead of failing with "Too many connections", which the default
        # pool does past its cap. No client-side retries: one bounded attempt per hit, the circuit breaker
        # below does the rest.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._script = self._client.register_script(_HIT_SCRIPT)
        self._down_until = float("-inf")
        self._logged_at = float("-inf")
        self._failures_since_log = 0
        self.healthy = True
        """False from a failed Redis call until the next successful one (for readiness and metrics)."""
        self.failures = 0
        """Hits answered by the fail mode since start (for metrics)."""

    async def hit(self, key: str, limit: int, window_seconds: int) -> QuotaDecision:
        """Count one request for ``key`` in Redis; on any Redis trouble, decide by the fail mode."""
        now = self._clock()
        if now < self._down_until:
            return self._fallback(limit)
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._script(keys=[self.key_prefix + key], args=[window_seconds * 1000])
            count, ttl_ms = int(result[0]), int(result[1])
        except (RedisError, OSError, TimeoutError, ValueError, TypeError, IndexError) as exc:
            self._record_failure(now, exc)
            return self._fallback(limit)
        if not self.healthy:
            log.warning("quota backend %s reachable again; counting resumed", self._where)
            self.healthy = True
        return QuotaDecision.from_count(count, limit, ttl_ms / 1000)

    def _fallback(self, limit: int) -> QuotaDecision:
        self.failures += 1
        if self.fail_mode == "open":
            return QuotaDecision(allowed=True, limit=limit, remaining=limit, reset_seconds=1, degraded=True)
        retry = max(int(self._retry_interval + 0.999), 1)
        return QuotaDecision(allowed=False, limit=limit, remaining=0, reset_seconds=retry, degraded=True)

    def _record_failure(self, now: float, exc: BaseException) -> None:
        self.healthy = False
        self._down_until = now + self._retry_interval
        self._failures_since_log += 1
        if now - self._logged_at >= self._log_interval:
            # One line, no traceback, no password: the class and message say refused/timeout/auth.
            log.warning(
                "quota backend %s unavailable (%s: %s); failing %s (%d failures since last report)",
                self._where,
                type(exc).__name__,
                exc or "timeout",
                self.fail_mode,
                self._failures_since_log,
            )
            self._logged_at = now
            self._failures_since_log = 0

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose(close_connection_pool=True)
