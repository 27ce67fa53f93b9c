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
CREATE TABLE IF NOT EXISTS verified (
    dest TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (dest, dev, ino)
);
"""
_COLUMNS = {"warning": "TEXT"}
"""Columns added to ``runs`` since its first version (added to an older database when it is opened)."""
INTERRUPTED = "interrupted"
"""The outcome of a run that never finished (``kill -9``, power loss), recorded by the next run."""


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
    warning: str | None = None
    """What the run noticed beside its outcome (a domain removed upstream, damaged local files)."""

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
                have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                for name, typ in _COLUMNS.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {typ}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError("sync.stateDir", f"cannot use state directory {directory}: {exc}") from exc

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def record(self, run: RunRecord, row_id: int | None = None) -> int:
        """Add ``run`` to the history (or, given the id :meth:`begin` returned, complete its row)."""
        row = asdict(run)
        with self._db() as db:
            if row_id is not None:
                sets = ", ".join(f"{c} = ?" for c in row)
                db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*row.values(), row_id])  # noqa: S608
            else:
                cols = ", ".join(row)
                cur = db.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                                 list(row.values()))
                row_id = int(cur.lastrowid or 0)
            db.execute(
                "DELETE FROM runs WHERE dest = ? AND id <= (SELECT max(id) FROM runs WHERE dest = ?) - ?",
                (run.dest, run.dest, KEEP_RUNS),
            )
        return row_id

    def begin(self, run: RunRecord) -> int:
        """Record a run that has just taken its root's lock: any earlier run into the same root still marked
        ``running`` was killed (the lock is ours now), and becomes ``interrupted``. Returns the new row's id."""
        row = asdict(run)
        with self._db() as db:
            db.execute("UPDATE runs SET outcome = ?, error = ? WHERE dest = ? AND outcome = 'running'",
                       (INTERRUPTED, "the run was interrupted before it finished (killed, or the host stopped)",
                        run.dest))
            cur = db.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                             list(row.values()))
            return int(cur.lastrowid or 0)

    def forget(self, row_id: int) -> None:
        """Drop a row :meth:`begin` added (a ``--watch`` poll that found nothing new)."""
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (row_id,))

    def digests(self, dest: str) -> dict[tuple[int, int], tuple[int, int, str]]:
        """What this sync last verified in ``dest``: ``(st_dev, st_ino) → (size, mtime_ns, sha256 digest)``."""
        with self._db() as db:
            rows = db.execute("SELECT dev, ino, size, mtime_ns, digest FROM verified WHERE dest = ?", (dest,))
            return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}

    def save_digests(self, dest: str, rows: dict[tuple[int, int], tuple[int, int, str]]) -> None:
        """Replace what is known verified in ``dest`` (the files of the export just published or repaired)."""
        with self._db() as db:
            db.execute("DELETE FROM verified WHERE dest = ?", (dest,))
            db.executemany("INSERT INTO verified VALUES (?, ?, ?, ?, ?, ?)",
                           [(dest, d, i, size, mtime, digest) for (d, i), (size, mtime, digest) in rows.items()])

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
