"""The quota backend interface: count one hit against a key's budget and say whether it fits.

Both backends implement the same *fixed window anchored at the first hit*: the first request for a key
opens a window of ``window_seconds``; every request in it (accepted or refused) counts; when it ends the
count starts again from zero. ``reset_seconds`` is the time until that happens, which is exactly when a
refused client regains capacity — so it is both ``RateLimit-Reset`` and ``Retry-After``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable


class QuotaDecision(NamedTuple):
    """The outcome of one hit (a named tuple: one is made per counted request, and a frozen dataclass costs
    several times as much to construct)."""

    allowed: bool
    limit: int
    remaining: int
    """Requests left in the current window after this one (never negative)."""
    reset_seconds: int
    """Whole seconds until the window frees capacity (at least 1)."""
    degraded: bool = False
    """True when the backend could not count (e.g. Redis unreachable) and answered by its fail mode."""

    @classmethod
    def from_count(cls, count: int, limit: int, remaining_window: float) -> QuotaDecision:
        """The decision for the ``count``-th hit of a window with ``remaining_window`` seconds left."""
        return cls(
            allowed=count <= limit,
            limit=limit,
            remaining=max(limit - count, 0),
            # The small epsilon absorbs float noise: (t + 3600) - t can be 3600.0000000002, which is 3600 s.
            reset_seconds=max(math.ceil(remaining_window - 1e-6), 1),
        )


@runtime_checkable
class QuotaBackend(Protocol):
    """Counts hits per key. Implementations never raise from :meth:`hit`: they decide by a fail mode."""

    async def hit(self, key: str, limit: int, window_seconds: int) -> QuotaDecision:
        """Count one request for ``key`` (``limit`` > 0) and decide."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
