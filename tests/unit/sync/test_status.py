"""sync/status.py: the status file the sync writes last and the server reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from stella_mirror.sync.status import OK, STATUS_FILE, SyncStatus, read_status, write_status

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _status(**kw: object) -> SyncStatus:
    base: dict[str, object] = {
        "source": "s3://mirror-stellaops/concelier/latest",
        "last_attempt_at": NOW,
        "last_outcome": OK,
        "last_success_at": NOW - timedelta(minutes=3),
        "export_id": "20261207T095700Z",
        "sequence": 42,
    }
    base.update(kw)
    return SyncStatus(**base)  # type: ignore[arg-type]


def test_round_trip_and_lag(tmp_path: Path) -> None:
    status = _status()
    write_status(tmp_path, status)
    assert read_status(tmp_path) == status
    assert status.ok
    assert status.lag_seconds(NOW) == 180.0
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed away"


def test_failed_run_keeps_last_success(tmp_path: Path) -> None:
    status = _status(last_outcome="signature", error="mirror/index.json.jws: no trusted key")
    write_status(tmp_path, status)
    got = read_status(tmp_path)
    assert got is not None and not got.ok
    assert got.error == "mirror/index.json.jws: no trusted key"
    assert got.lag_seconds(NOW + timedelta(minutes=20)) == 23 * 60


def test_never_synced_has_no_lag() -> None:
    assert _status(last_success_at=None).lag_seconds(NOW) is None


def test_missing_or_garbage_reads_as_none(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text("{not json")
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text('{"schemaVersion": 2}')
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text('{"schemaVersion": 1, "source": "x", "lastAttemptAt": "yesterday"}')
    assert read_status(tmp_path) is None
