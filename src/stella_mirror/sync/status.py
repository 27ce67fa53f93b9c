"""The sync's last word on an export root: a small JSON file the server reads for metrics and ``/status``.

``stella-mirror sync`` records every run in its SQLite history (``sync/state.py``), in the state directory.
The server cannot reach that directory — it sees only the export roots, mounted read-only — so at the end
of every run the sync also writes ``<export root>/.sync-status.json`` (temp file + rename, written last).
Nothing under the root's dot-names is ever served. The file says when the root was last confirmed current
with its upstream (``lastSuccessAt``: a run that published, or found nothing new), what the last attempt
was and how it ended; *lag* is the time since that confirmation (runbook §7: alert past 15 minutes).

A missing or unreadable file reads as ``None`` ("never synced here"): a root filled by ``export`` on the
same host has no sync, and that is not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from stella_mirror.bundle.atomic import write_bytes_atomic
from stella_mirror.errors import ConfigError
from stella_mirror.timeutil import parse_rfc3339, rfc3339

STATUS_FILE = ".sync-status.json"
OK = "ok"
"""``lastOutcome`` of a run that published or found the served export current; otherwise the error's
``kind`` (``signature``, ``digest``, ``expired``, ``rollback``, ``unreachable``, ``locked``, …)."""


@dataclass(frozen=True)
class SyncStatus:
    """What the last sync run into one export root established."""

    source: str
    """The source URL, credentials removed."""
    last_attempt_at: datetime
    last_outcome: str
    last_success_at: datetime | None
    export_id: str | None
    """The export the root serves after the run."""
    sequence: int | None
    error: str | None = None
    """The last attempt's error message (never a secret), None on success."""
    generated_at: datetime | None = None
    """The served export's signed ``generatedAt``: set by the origin's export and carried unchanged through
    every mirror in a chain, so ``now - generated_at`` is the export's age wherever it is read."""
    expires_at: datetime | None = None
    """The served export's signed ``expiresAt``."""
    damaged: tuple[str, ...] = ()
    """Files of the root (relative paths) a run found damaged and could not repair (``sync --repair``)."""
    removed_upstream: tuple[str, ...] = ()
    """Domains the root served before the last publish that the upstream no longer has."""

    @property
    def ok(self) -> bool:
        return self.last_outcome == OK

    def lag_seconds(self, now: datetime) -> float | None:
        """Seconds since the root was last confirmed current; None if it never was."""
        if self.last_success_at is None:
            return None
        return max(0.0, (now - self.last_success_at).total_seconds())

    def export_age_seconds(self, now: datetime) -> float | None:
        """Seconds since the origin generated the served export (None when unknown)."""
        if self.generated_at is None:
            return None
        return max(0.0, (now - self.generated_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": 1,
            "source": self.source,
            "lastAttemptAt": rfc3339(self.last_attempt_at),
            "lastOutcome": self.last_outcome,
            "lastSuccessAt": rfc3339(self.last_success_at) if self.last_success_at else None,
            "exportId": self.export_id,
            "sequence": self.sequence,
            "error": self.error,
            "generatedAt": rfc3339(self.generated_at) if self.generated_at else None,
            "expiresAt": rfc3339(self.expires_at) if self.expires_at else None,
            "damaged": list(self.damaged),
            "removedUpstream": list(self.removed_upstream),
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> SyncStatus:
        """Parse :meth:`as_dict`'s output; ValueError/KeyError/TypeError/ConfigError on anything else."""
        if obj.get("schemaVersion") != 1:
            raise ValueError("schemaVersion must be 1")
        success = obj.get("lastSuccessAt")
        sequence = obj.get("sequence")
        if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)):
            raise TypeError("sequence must be an integer")
        return cls(
            source=str(obj["source"]),
            last_attempt_at=parse_rfc3339(str(obj["lastAttemptAt"])),
            last_outcome=str(obj["lastOutcome"]),
            last_success_at=parse_rfc3339(str(success)) if success else None,
            export_id=str(obj["exportId"]) if obj.get("exportId") is not None else None,
            sequence=sequence,
            error=str(obj["error"]) if obj.get("error") is not None else None,
            generated_at=parse_rfc3339(str(obj["generatedAt"])) if obj.get("generatedAt") else None,
            expires_at=parse_rfc3339(str(obj["expiresAt"])) if obj.get("expiresAt") else None,
            damaged=tuple(str(p) for p in obj.get("damaged") or ()),
            removed_upstream=tuple(str(d) for d in obj.get("removedUpstream") or ()),
        )


def read_status(root: Path) -> SyncStatus | None:
    """The status the last sync wrote into ``root``, or None (never synced, or unreadable)."""
    try:
        return SyncStatus.from_dict(orjson.loads((root / STATUS_FILE).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
        return None


def write_status(root: Path, status: SyncStatus) -> None:
    """Replace ``root``'s status file atomically (readers see the old file or the new one)."""
    write_bytes_atomic(root / STATUS_FILE, orjson.dumps(status.as_dict(), option=orjson.OPT_SORT_KEYS))
