"""In-process quota counting: one server process, no shared state (use Redis for several replicas).

Asyncio-safe without a lock: :meth:`MemoryQuotaBackend.hit` never awaits between reading and writing a
counter, so on one event loop no two hits interleave. Memory is bounded: windows are kept in the order they
opened, expired ones are dropped from the front as hits arrive, and past ``max_keys`` the oldest windows are
forgotten (which can only ever let a forgotten client through early, never block one wrongly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from stella_mirror.server.quotas.backend import QuotaDecision

log = logging.getLogger(__name__)

_EVICTION_LOG_INTERVAL = 60.0


class MemoryQuotaBackend:
    """Fixed windows anchored at each key's first hit, counted in a dict."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        # key -> [count, window end]; dict order is the order windows opened (a re-opened key moves to the end).
        self._windows: dict[str, list[float]] = {}
        self._logged_at = float("-inf")
        self._next_expiry = float("inf")
        """No window ends before this time (the front window's end, or earlier)."""
        self.healthy = True
        """Always true: there is nothing to lose contact with."""

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, key: str, limit: int, window_seconds: int) -> QuotaDecision:
        """Count one request for ``key`` and decide."""
        now = self._clock()
        if now >= self._next_expiry:
            self._evict_expired(now)
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            if window is not None:
                del self._windows[key]
            window = [0, now + window_seconds]
            self._windows[key] = window
            if len(self._windows) > self._max_keys:
                self._evict_overflow(now)
        window[0] += 1
        if window[1] < self._next_expiry:  # a window that ends before the one we were waiting for
            self._next_expiry = window[1]
        return QuotaDecision.from_count(int(window[0]), limit, window[1] - now)

    def _evict_expired(self, now: float) -> None:
        # Windows opened earlier end earlier (for one window length), so expired ones sit at the front.
        # A few per hit keeps the amortised cost constant.
        # Between expiries (the front window's end) nothing needs looking at.
        for _ in range(8):
            first = next(iter(self._windows.items()), None)
            if first is None:
                self._next_expiry = float("inf")
                return
            if first[1][1] > now:
                self._next_expiry = first[1][1]
                return
            del self._windows[first[0]]
        self._next_expiry = now  # more may have expired: look again on the next hit

    def _evict_overflow(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if w[1] <= now]:
            del self._windows[key]
        dropped = 0
        while len(self._windows) > self._max_keys:
            del self._windows[next(iter(self._windows))]
            dropped += 1
        if dropped and now - self._logged_at >= _EVICTION_LOG_INTERVAL:
            self._logged_at = now
            log.warning("memory quota table full (%d keys): forgot the %d oldest windows", self._max_keys, dropped)

    async def close(self) -> None:
        """Nothing to release."""
        self._windows.clear()
