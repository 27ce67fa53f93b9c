"""Bounded retries with exponential backoff and full jitter, for transient source errors."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from stella_mirror.errors import HTTPStatusError, SourceError, TruncatedError, UnreachableError

T = TypeVar("T")

ATTEMPTS = 4
BASE_SECONDS = 0.5
CAP_SECONDS = 8.0


def transient(exc: BaseException) -> bool:
    """Worth another try: the network failed, a transfer ended early, or the server is busy (5xx/429)."""
    if isinstance(exc, UnreachableError | TruncatedError):
        return True
    return isinstance(exc, HTTPStatusError) and (exc.status >= 500 or exc.status in (408, 429))


def backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: uniform in [0, min(cap, base·2^attempt)] ("full jitter")."""
    return random.uniform(0, min(CAP_SECONDS, BASE_SECONDS * 2**attempt))  # noqa: S311 - jitter, not secrets


def with_retries(
    call: Callable[[], T],
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[SourceError, int], None] | None = None,
) -> T:
    """``call()``, tried up to ``attempts`` times while it fails transiently; the last error is raised."""
    for attempt in range(attempts):
        try:
            return call()
        except SourceError as exc:
            if not transient(exc) or attempt == attempts - 1:
                raise
            if on_retry is not None:
                on_retry(exc, attempt + 1)
            sleep(backoff(attempt))
    raise AssertionError("unreachable")
