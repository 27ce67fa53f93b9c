"""The sync's own state (S12): a small SQLite database in the state directory.

* ``runs`` — one row per run: job, destination, source (credentials removed), start, end, outcome
  (``ok``, ``unchanged`` or the error's kind), exportId and sequence served afterwards, files and bytes
  fetched and reused, and the error message. ``stella-mirror sync history`` prints it.
* ``probes`` — per (destination, source, kind) the last upstream probe token, the export it matched and
  when the last full check ran, so one-shot runs from a timer can skip the index download when the
  upstream says "unchanged" (B5), and still do a full check every ``interval``.

Several processes may open the database (a timer run beside a manual one): SQLite's own locking with a
busy timeout serialises the short writes. Old runs beyond :data:`KEEP_RUNS` per destination are dropped.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stella_mirror.errors import ConfigError

DB_NAME = "sync-state.sqlite3"
KEEP_RUNS = 10000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL, dest TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, outcome TEXT NOT NULL,
    export_id TEXT, sequence INTEGER,
    files_fetched INTEGER NOT NULL DEFAULT 0, bytes_fetched INTEGER NOT NULL DEFAULT 0,
    files_reused INTEGER NOT NULL DEFAULT 0, bytes_reused INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_dest ON runs (dest, id);
CREATE TABLE IF NOT EXISTS probes (
    dest TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    token TEXT NOT NULL, export_id TEXT, full_check_at REAL NOT NULL,
    PRIMARY KEY (dest, source, kind)
);
"""


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/stella-mirror``, else
    ``~/.local/state/stella-mirror`` — and ``/var/lib/stella-mirror`` for root."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/stella-mirror")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stella-mirror"


@dataclass
class RunRecord:
    """One sync run as recorded."""

    job: str
    dest: str
    kind: str
    source: str
    started_at: str
    ended_at: str = ""
    outcome: str = "running"
    export_id: str | None = None
    sequence: int | None = None
    files_fetched: int = 0
    bytes_fetched: int = 0
    files_reused: int = 0
    bytes_reused: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@dataclass(frozen=True)
class ProbeState:
    token: str
    export_id: str | None
    full_check_at: float


class SyncState:
    """The state database of one state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / DB_NAME
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError("sync.stateDir", f"cannot use state directory {directory}: {exc}") from exc

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def record(self, run: RunRecord) -> None:
        row = asdict(run)
        cols = ", ".join(row)
        with self._db() as db:
            db.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))  # noqa: S608
            db.execute(
                "DELETE FROM runs WHERE dest = ? AND id <= (SELECT max(id) FROM runs WHERE dest = ?) - ?",
                (run.dest, run.dest, KEEP_RUNS),
            )

    def history(self, limit: int = 50, dest: str | None = None, job: str | None = None) -> list[RunRecord]:
        """The most recent runs, newest first."""
        where, args = [], []
        if dest is not None:
            where.append("dest = ?")
            args.append(dest)
        if job is not None:
            where.append("job = ?")
            args.append(job)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        names = [f for f in RunRecord.__dataclass_fields__]
        with self._db() as db:
            rows = db.execute(
                f"SELECT {', '.join(names)} FROM runs {clause} ORDER BY id DESC LIMIT ?",  # noqa: S608
                [*args, limit],
            ).fetchall()
        return [RunRecord(**dict(zip(names, row, strict=True))) for row in rows]

    def probe(self, dest: str, source: str, kind: str) -> ProbeState | None:
        with self._db() as db:
            row = db.execute(
                "SELECT token, export_id, full_check_at FROM probes WHERE dest = ? AND source = ? AND kind = ?",
                (dest, source, kind),
            ).fetchone()
        return ProbeState(*row) if row else None

    def save_probe(self, dest: str, source: str, kind: str, state: ProbeState | None) -> None:
        """Remember (or, with None, forget) what the last check of this upstream established."""
        with self._db() as db:
            db.execute("DELETE FROM probes WHERE dest = ? AND source = ? AND kind = ?", (dest, source, kind))
            if state is not None:
                db.execute(
                    "INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?)",
                    (dest, source, kind, state.token, state.export_id, state.full_check_at),
                )
