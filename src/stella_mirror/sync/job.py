"""One sync run into one export root: probe, stage, reuse, fetch, verify, commit — or change nothing (B1, B2).

Under the root's lock (a second run fails at once with :class:`~stella_mirror.errors.LockedError`):

1. Clean what a killed run left (staging trees, temporary links). Interrupted downloads in
   ``<root>/.sync-partial/`` stay, to be resumed.
2. *Probe* (B5): when the last full check is younger than ``interval`` and the upstream's probe token is
   the one recorded then, the served export is current: nothing else is asked of the source.
3. Read the upstream signed index(es). Byte-identical to the served ones: current, nothing to do.
4. Stage the new export under ``<root>/.staging-<exportId>-…``: the indexes, their signatures; verify
   the indexes alone (signature, expiry, ``sequence`` above the served one — or equal with
   ``allow_same``) before anything large is downloaded.
5. For every file the signed indexes list: hard-link a file of the served (or another kept) export with
   the same size and digest, else fetch it with the signed size as cap; fetch each payload's detached
   signatures (the source may show they equal the served ones and skip the transfer).
6. Verify the whole staged tree (every size, digest, signature, manifest) with ``bundle.store``.
7. Move it into place and switch ``latest`` atomically (``publish.ExportRoot.commit``), prune to ``keep``.

Any failure before 7 leaves ``latest`` and the served export as they were; the staging tree is removed
(or, after ``kill -9``, by the next run). Every run ends by recording itself in the state database and
writing ``<root>/.sync-status.json`` (while still holding the lock, so two runs never race on it).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from stella_mirror.bundle import store, verify
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.errors import (
    ConfigError,
    ExpiredError,
    LocalIOError,
    LockedError,
    MalformedBundleError,
    RollbackError,
    StellaMirrorError,
)
from stella_mirror.publish import ExportRoot, check_export_id
from stella_mirror.sync.plan import export_identity, listed_files
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources.interface import SIGNATURE_CAP, FetchStats, Progress, Source, Want, link_or_copy
from stella_mirror.sync.sources.listing import index_paths, local_index_names
from stella_mirror.sync.state import ProbeState, RunRecord, SyncState
from stella_mirror.sync.status import OK, SyncStatus, read_status, write_status
from stella_mirror.timeutil import rfc3339, utcnow

PARTIAL_DIR = ".sync-partial"
PUBLISHED, UNCHANGED, REPAIRED = "published", "unchanged", "repaired"
"""History outcomes of a successful run (the status file says ``ok`` for all three)."""


@dataclass(frozen=True)
class Job:
    """What to sync where, and what to trust."""

    name: str
    kind: str
    dest: Path
    keys: TrustedKeys
    keep: int = 3
    allow_same: bool = False
    interval: float = 300.0
    """Seconds between full checks; in between, an unchanged probe token is enough."""


@dataclass
class Served:
    """The export an export root serves, as its signed indexes describe it."""

    dir: Path
    export_id: str
    sequence: int
    index_bytes: dict[str, bytes]
    docs: dict[str, dict[str, Any]]

    def file(self, rel: str) -> Path | None:
        """The served copy of ``rel`` (a path from a signed index), if there is one."""
        path = self.dir / rel
        return path if path.is_file() and not path.is_symlink() else None

    def check_fresh(self, now: datetime) -> None:
        """The served indexes are not past ``expiresAt`` (a current but expired mirror is an error)."""
        for rel, doc in self.docs.items():
            if verify.parse_time(doc.get("expiresAt"), rel, "expiresAt") <= now:
                raise ExpiredError(
                    rel, f"the served index expired at {doc.get('expiresAt')} and the source has nothing newer"
                )


def _export_indexes(export_dir: Path, kind: str) -> dict[str, bytes]:
    return {rel: (export_dir / rel).read_bytes() for rel in index_paths(kind, local_index_names(export_dir))}


def _parse(indexes: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    docs = {}
    for rel, data in indexes.items():
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MalformedBundleError(rel, f"not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise MalformedBundleError(rel, "top level is not a JSON object")
        docs[rel] = doc
    return docs


def load_served(root: ExportRoot, kind: str) -> Served | None:
    """What ``root`` serves now (None when nothing, or nothing readable, is published)."""
    export_dir = root.active_dir()
    if export_dir is None or not export_dir.is_dir():
        return None
    try:
        indexes = _export_indexes(export_dir, kind)
        docs = _parse(indexes)
        export_id, sequence = export_identity(docs)
    except (OSError, MalformedBundleError):
        return None
    return Served(export_dir, export_id, sequence, indexes, docs) if indexes else None


def _reuse_map(root: ExportRoot, kind: str, served: Served | None, extra: Path | None) -> dict[tuple[str, int], Path]:
    """(digest, size) → a local file with those, from the kept exports (the served one wins)."""
    dirs = [root.path / i for i in root.export_ids()]
    if extra is not None:
        dirs.append(extra)
    if served is not None:
        dirs.append(served.dir)  # last: its files win
    found: dict[tuple[str, int], Path] = {}
    for export_dir in dirs:
        try:
            docs = _parse(_export_indexes(export_dir, kind))
            for item in listed_files(docs):
                path = export_dir / item.rel
                if path.is_file() and not path.is_symlink() and path.stat().st_size == item.size:
                    found[(item.digest, item.size)] = path
        except (OSError, MalformedBundleError):
            continue  # a damaged kept export offers nothing
    return found


class _Run:
    """The steps of one run, sharing what they learn."""

    def __init__(self, job: Job, source: Source, state: SyncState, reporter: Reporter, rec: RunRecord) -> None:
        self.job = job
        self.source = source
        self.state = state
        self.reporter = reporter
        self.rec = rec
        self.root = ExportRoot(job.dest)
        self.partial = job.dest / PARTIAL_DIR
        self.progress = Progress(
            advance=lambda n: reporter.advance(job.name, n),
            retry=lambda rel, exc, n: reporter.event(
                "retry", "warning", job=job.name, file=rel, attempt=n, error=str(exc)
            ),
        )

    def count(self, stats: FetchStats) -> None:
        self.rec.files_fetched += stats.files_fetched
        self.rec.bytes_fetched += stats.bytes_fetched
        self.rec.files_reused += stats.files_reused
        self.rec.bytes_reused += stats.bytes_reused

    def run(self, full: bool) -> str:
        job, root = self.job, self.root
        root.clean_leftovers()
        served = load_served(root, job.kind)
        floor = served.sequence if served else _status_sequence(job.dest)
        key = (str(job.dest), self.source.url, job.kind)
        previous = self.state.probe(*key)
        now = utcnow()
        if (
            not full
            and not job.allow_same
            and served is not None
            and previous is not None
            and previous.export_id == served.export_id
            and time.time() - previous.full_check_at < job.interval
            and self.source.probe(job.kind, previous.token) == previous.token
        ):
            served.check_fresh(now)
            return UNCHANGED
        token = self.source.probe(job.kind, None)
        checked_at = time.time()
        indexes = self.source.index_files(job.kind)
        if not indexes:
            raise MalformedBundleError(self.source.url, f"the source holds no signed {job.kind} index")
        if served is not None and not job.allow_same and indexes == served.index_bytes:
            served.check_fresh(now)
            self.state.save_probe(*key, ProbeState(token, served.export_id, checked_at))
            return UNCHANGED
        docs = _parse(indexes)
        export_id, sequence = export_identity(docs)
        try:
            check_export_id(export_id)
        except ConfigError as exc:
            raise MalformedBundleError(sorted(indexes)[0], exc.reason) from None
        self._check_sequence(served, floor, export_id, sequence, sorted(indexes)[0])
        # The export `latest` names is never moved aside, even when its index is unreadable: it is repaired.
        repair = export_id == root.active_id()
        outcome = self._stage(served, indexes, docs, export_id, repair, floor, now)
        self.state.save_probe(*key, ProbeState(token, export_id, checked_at))
        shutil.rmtree(self.partial, ignore_errors=True)  # every download completed
        return outcome

    def _check_sequence(
        self, served: Served | None, floor: int | None, export_id: str, sequence: int, where: str
    ) -> None:
        """Refuse a rollback (B2): a sequence below the served one, or equal unless ``allow_same``."""
        if floor is None:
            return
        if sequence < floor or (sequence == floor and not self.job.allow_same):
            raise RollbackError(
                where,
                f"the source's sequence {sequence} (export {export_id}) is not newer than the served sequence "
                f"{floor}" + ("" if sequence < floor else " (--allow-same re-syncs it)"),
            )
        if served is not None and served.export_id == export_id and served.sequence != sequence:
            raise MalformedBundleError(where, f"export {export_id} is served with another sequence ({served.sequence})")

    def _stage(
        self,
        served: Served | None,
        indexes: dict[str, bytes],
        docs: dict[str, dict[str, Any]],
        export_id: str,
        repair: bool,
        floor: int | None,
        now: datetime,
    ) -> str:
        job, root = self.job, self.root
        stale = None
        if not repair and (root.path / export_id).exists():
            # Moved into place by a run killed before it switched `latest` (or kept from long ago): its files
            # are reuse material, its name is needed. The rename makes it a leftover the next run removes.
            stale = root.path / f".staging-{export_id}-stale-{secrets.token_hex(4)}"
            (root.path / export_id).rename(stale)
        reuse = _reuse_map(root, job.kind, served, stale)
        min_sequence = None if floor is None else (floor if job.allow_same else floor + 1)

        def local(rel: str) -> Path | None:
            return served.file(rel) if served is not None else None

        with root.staging(export_id, exist_ok=repair) as stage:
            for rel, data in indexes.items():
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_bytes(data)
                self.rec.files_fetched += 1
                self.rec.bytes_fetched += len(data)
            self.count(self.source.fetch(_signatures(indexes, local, index=True), stage, self.partial, self.progress))
            with store.DirectoryReader(stage) as reader:
                for rel in sorted(indexes):
                    verify.verify_index(reader, rel, job.kind, job.keys, now, min_sequence)
            wants: list[Want] = []
            for item in listed_files(docs):
                have = reuse.get((item.digest, item.size))
                if have is not None:
                    link_or_copy(have, stage / item.rel)
                    self.rec.files_reused += 1
                    self.rec.bytes_reused += item.size
                else:
                    wants.append(Want(item.rel, item.size, item.digest, optional=item.optional))
                if item.signed:
                    wants += _signatures([item.rel], local, optional=item.optional)
            self.reporter.start_transfer(job.name, sum(w.max_size for w in wants if w.digest is not None))
            try:
                self.count(self.source.fetch(wants, stage, self.partial, self.progress))
            finally:
                self.reporter.end_transfer(job.name)
            verdict = store.verify_export_dir(stage, job.keys, now, min_sequence)
            if verdict.product != job.kind or verdict.export_id != export_id:
                raise MalformedBundleError("mirror/", f"staged a {verdict.product} export {verdict.export_id}")
            if repair:
                root.repair(stage, export_id)
                return REPAIRED
            root.commit(stage, export_id, job.keep)
        return PUBLISHED


def _signatures(rels: Any, local: Any, index: bool = False, optional: bool = False) -> list[Want]:
    """The detached ``.jws`` and ``.sig`` of each path (an index's ``.sig`` is optional, as in ``verify``;
    both are for an optional file)."""
    return [
        Want(rel + suffix, SIGNATURE_CAP, local=local(rel + suffix), optional=optional or (index and suffix == ".sig"))
        for rel in sorted(rels)
        for suffix in (".jws", ".sig")
    ]


def _status_sequence(dest: Path) -> int | None:
    """The sequence the last sync recorded in the root: the rollback floor when the served index is unreadable."""
    status = read_status(dest)
    return status.sequence if status is not None else None


def run_job(
    job: Job, source: Source, state: SyncState, reporter: Reporter, full: bool = False, record_unchanged: bool = True
) -> RunRecord:
    """One run of ``job``: recorded in ``state`` and in the root's status file whatever happens.

    ``full`` skips the probe shortcut; ``record_unchanged=False`` (``--watch``) keeps runs that found
    nothing new out of the history (the status file still says the root was confirmed current).
    Returns the record of a successful run; raises the run's error (a :class:`StellaMirrorError`) otherwise.
    """
    started = utcnow()
    rec = RunRecord(job.name, str(job.dest), job.kind, source.url, rfc3339(started))
    reporter.event("sync-start", job=job.name, kind=job.kind, source=source.url, dest=str(job.dest))
    root = ExportRoot(job.dest)
    error: StellaMirrorError | None = None
    try:
        with root.locked():
            try:
                rec.outcome = _Run(job, source, state, reporter, rec).run(full)
            except StellaMirrorError as exc:
                error = exc
            except OSError as exc:
                error = LocalIOError(f"{exc.filename or job.dest}: {exc.strerror or exc}")
            except Exception as exc:
                error = StellaMirrorError(f"unexpected {type(exc).__name__}: {exc}")
            _finish(job, root, rec, error, started)
    except LockedError as exc:
        error = exc  # the run holding the lock owns the status file: only the history hears of this one
        rec.outcome, rec.error = exc.kind, str(exc)
    except OSError as exc:
        error = LocalIOError(f"{job.dest}: cannot lock the export root: {exc.strerror or exc}")
        rec.outcome, rec.error = error.kind, str(error)
    rec.ended_at = rfc3339(utcnow())
    if rec.outcome == UNCHANGED and not record_unchanged:
        return rec
    try:
        state.record(rec)
    except Exception as exc:  # the run's own outcome matters more than its record
        reporter.event("history-not-recorded", "warning", job=job.name, error=str(exc))
    if error is not None:
        reporter.event("sync-failed", "error", job=job.name, outcome=rec.outcome, error=rec.error)
        raise error
    reporter.event(
        rec.outcome,
        job=job.name,
        exportId=rec.export_id,
        sequence=rec.sequence,
        filesFetched=rec.files_fetched,
        bytesFetched=rec.bytes_fetched,
        filesReused=rec.files_reused,
        bytesReused=rec.bytes_reused,
    )
    return rec


def _finish(job: Job, root: ExportRoot, rec: RunRecord, error: StellaMirrorError | None, started: datetime) -> None:
    """Fill in what the root serves now and write its status file (under the lock)."""
    if error is not None:
        rec.outcome, rec.error = error.kind, str(error)
    served = load_served(root, job.kind)
    rec.export_id = served.export_id if served else None
    rec.sequence = served.sequence if served else None
    previous = read_status(job.dest)
    status = SyncStatus(
        source=rec.source,
        last_attempt_at=started,
        last_outcome=OK if error is None else error.kind,
        last_success_at=utcnow() if error is None else (previous.last_success_at if previous else None),
        export_id=rec.export_id,
        sequence=rec.sequence,
        error=rec.error,
    )
    with contextlib.suppress(OSError):  # a full disk must not hide the run's real error; the history has it
        write_status(job.dest, status)
