"""Time helpers: RFC 3339 in UTC with a ``Z``, and ``7d``/``12h``-style durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from stella_mirror.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    """Now, in UTC, truncated to whole seconds (what we write into metadata)."""
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(dt: datetime) -> str:
    """``2026-11-29T16:00:00Z`` (UTC, ``Z`` suffix; microseconds kept when present)."""
    dt = dt.astimezone(UTC)
    text = dt.isoformat()
    return text.replace("+00:00", "Z")


def parse_rfc3339(value: str, key: str = "time") -> datetime:
    """Parse an RFC 3339 timestamp with a zone; ConfigError naming ``key`` otherwise."""
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(key, f"{value!r} is not an RFC 3339 timestamp") from exc
    if dt.tzinfo is None:
        raise ConfigError(key, f"{value!r} has no time zone (add Z or +00:00)")
    return dt.astimezone(UTC)


def parse_duration(value: str, key: str = "duration") -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → timedelta."""
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(key, f"{value!r} is not a duration like 15m, 12h or 7d")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
