"""One sync run into one export root: probe, trust, stage, reuse, fetch, verify, commit — or change nothing
(B1, B2).

Under the root's lock (a second run fails at once with :class:`~stella_mirror.errors.LockedError`):

1. Clean what a killed run left (staging trees, temporary links). Interrupted downloads in
   ``<root>/.sync-partial/`` stay, to be resumed.
2. *Probe* (B5): when the last full check is younger than ``interval`` and the upstream's probe token is
   the one recorded then, the served export is current: nothing else is asked of the source.
3. Read the upstream signed index(es) and their signatures **into memory**. Byte-identical to the served
   ones: current, nothing to do. Otherwise :class:`~stella_mirror.bundle.trusted.TrustedIndexSet` accepts them
   — signature, then expiry, then sequence — or the run fails. Until then nothing in the root is created,
   renamed, linked or removed: an upstream's ``exportId`` is a name only once it verified, and it never
   names a directory that is not that very export.
4. Stage the new export under ``<root>/.staging-<exportId>-…``: the indexes and signatures from memory.
5. For every file the signed indexes list: hard-link a local file (the served or a kept export's) whose
   SHA-256 is *proven* to be the signed digest — hashed now, or recorded by this sync when it last verified
   that very file (same device, inode, size and mtime_ns) — else fetch it with the signed size as cap.
   A damaged local file is fetched again, never reused, and never blocks a run.
6. Verify the whole staged tree (every size, digest, signature, manifest) with ``bundle.store``; record the
   verified files' digests (``publish`` fsyncs the tree before it gets its name).
7. Move it into place and switch ``latest`` atomically (``publish.ExportRoot.commit``), prune to ``keep``.

Any failure before 7 leaves ``latest`` and the served export as they were; the staging tree is removed
(or, after ``kill -9``, by the next run). Every run is in the history from the moment it holds the lock (a
killed one is marked ``interrupted`` by the next), and ends by writing ``<root>/.sync-status.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from stella_mirror.bundle import layout, store
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.bundle.trusted import TrustedIndex, TrustedIndexSet
from stella_mirror.errors import (
    DigestError,
    ExpiredError,
    ExportConflictError,
    LocalIOError,
    LockedError,
    MalformedBundleError,
    StellaMirrorError,
)
from stella_mirror.publish import ExportRoot
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources.interface import CHUNK, SIGNATURE_CAP, FetchStats, Progress, Source, Want, link_or_copy
from stella_mirror.sync.state import ProbeState, RunRecord, SyncState
from stella_mirror.sync.status import OK, SyncStatus, read_status, write_status
from stella_mirror.timeutil import rfc3339, utcnow

PARTIAL_DIR = ".sync-partial"
PUBLISHED, UNCHANGED, REPAIRED = "published", "unchanged", "repaired"
"""History outcomes of a successful run (the status file says ``ok`` for all three)."""
Record = dict[tuple[int, int], tuple[int, int, str]]
"""``(st_dev, st_ino) → (size, mtime_ns, digest)``: files this sync verified."""


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
    repair: bool = False
    """Re-hash the served export (no recorded digest is believed) and repair it in place; implies
    ``allow_same`` and a full check."""
    run_timeout: float | None = 3600.0
    """Seconds a run may take before it fails as a stalled source (and releases the lock)."""


def _local_indexes(export_dir: Path, kind: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """An export directory's index files and their signatures (absent ones left out)."""
    indexes = {rel: (export_dir / rel).read_bytes()
               for rel in layout.index_paths(kind, layout.local_index_names(export_dir))}
    sigs = {}
    for rel in indexes:
        for suffix in layout.SIGNATURE_SUFFIXES:
            with contextlib.suppress(OSError):
                sigs[rel + suffix] = (export_dir / (rel + suffix)).read_bytes()
    return indexes, sigs


def load_served(root: ExportRoot, trust: TrustedIndexSet) -> TrustedIndex | None:
    """What ``root`` serves now, when its signed indexes still verify against the pinned keys."""
    export_dir = root.active_dir()
    if export_dir is None or not export_dir.is_dir():
        return None
    try:
        indexes, sigs = _local_indexes(export_dir, trust.kind)
    except OSError:
        return None
    return trust.load_served(indexes, sigs) if indexes else None


def _check_fresh(served: TrustedIndex, now: datetime) -> None:
    """A current but expired mirror is an error: the served index is past ``expiresAt``."""
    if served.expires_at <= now:
        raise ExpiredError(sorted(served.indexes)[0], f"the served index expired at {rfc3339(served.expires_at)} "
                                                      "and the source has nothing newer")


def _same_export(export_dir: Path, new: TrustedIndex) -> bool:
    """``export_dir`` is the export ``new`` describes: a real directory holding byte-identical signed indexes
    (a run killed between moving it into place and switching ``latest`` leaves one)."""
    if export_dir.is_symlink() or not export_dir.is_dir():
        return False
    for rel, data in new.indexes.items():
        path = export_dir / rel
        try:
            if path.is_symlink() or path.stat().st_size != len(data) or path.read_bytes() != data:
                return False
        except OSError:
            return False
    return True


def _sha256_file(path: Path, size: int) -> str | None:
    """``sha256:<hex>`` of a regular file of exactly ``size`` bytes (None otherwise; never reads past ``size``)."""
    h = hashlib.sha256()
    read = 0
    try:
        with path.open("rb") as fh:
            while read <= size and (chunk := fh.read(min(CHUNK, size + 1 - read))):
                h.update(chunk)
                read += len(chunk)
    except OSError:
        return None
    return "sha256:" + h.hexdigest() if read == size else None


@dataclass
class _Proofs:
    """Local files proven (or found not) to hold given digests, during one run."""

    known: Record
    """What this sync recorded when it last verified files of the root."""
    rehash: bool
    """Believe no record: hash every candidate now (``--repair``)."""
    proven: Record = field(default_factory=dict)
    damaged: dict[Path, str] = field(default_factory=dict)
    """Local files found not to hold the digest their export lists → that digest."""
    good: set[Path] = field(default_factory=set)

    def holds(self, path: Path, size: int, digest: str) -> bool:
        """``path`` is a regular file whose SHA-256 is ``digest``: recorded for this very inode, or hashed now."""
        try:
            st = path.lstat()
        except OSError:
            return False
        if not path.is_file() or path.is_symlink():
            return False
        key = (st.st_dev, st.st_ino)
        seen = self.proven.get(key)
        if seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns):
            if seen[2] != digest:
                self.damaged[path] = digest
            return seen[2] == digest
        if st.st_size != size:
            self.damaged[path] = digest
            return False
        rec = self.known.get(key)
        if not self.rehash and rec is not None and rec[:2] == (st.st_size, st.st_mtime_ns):
            actual: str | None = rec[2]
        else:
            actual = _sha256_file(path, size)
        if actual is None:
            return False
        self.proven[key] = (st.st_size, st.st_mtime_ns, actual)
        if actual != digest:
            self.damaged[path] = digest
            return False
        self.good.add(path)
        return True


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
        self.proofs = _Proofs({}, job.repair)
        self.removed: list[str] = []
        self.repaired_dir: Path | None = None

    def count(self, stats: FetchStats) -> None:
        self.rec.files_fetched += stats.files_fetched
        self.rec.bytes_fetched += stats.bytes_fetched
        self.rec.files_reused += stats.files_reused
        self.rec.bytes_reused += stats.bytes_reused

    def run(self, full: bool) -> str:
        job, root = self.job, self.root
        root.clean_leftovers()
        now = utcnow()
        same_again = job.allow_same or job.repair
        trust = TrustedIndexSet(job.kind, job.keys, now, floor=_status_sequence(job.dest), allow_same=same_again)
        served = load_served(root, trust)
        key = (str(job.dest), self.source.url, job.kind)
        previous = self.state.probe(*key)
        self.source.begin(job.run_timeout)
        if (
            not full
            and not same_again
            and served is not None
            and previous is not None
            and previous.export_id == served.export_id
            and time.time() - previous.full_check_at < job.interval
            and self.source.probe(job.kind, previous.token) == previous.token
        ):
            _check_fresh(served, now)
            return UNCHANGED
        token = self.source.probe(job.kind, None)
        checked_at = time.time()
        indexes = self.source.index_files(job.kind)
        if not indexes:
            raise MalformedBundleError(self.source.url, f"the source holds no signed {job.kind} index")
        if served is not None and not same_again and indexes == dict(served.indexes):
            _check_fresh(served, now)
            self.state.save_probe(*key, ProbeState(token, served.export_id, checked_at))
            return UNCHANGED
        signatures = self.source.small_files(
            [rel + suffix for rel in sorted(indexes) for suffix in layout.SIGNATURE_SUFFIXES], SIGNATURE_CAP
        )
        self.rec.files_fetched += len(indexes) + len(signatures)
        self.rec.bytes_fetched += sum(map(len, indexes.values())) + sum(map(len, signatures.values()))
        new = trust.update_index(indexes, signatures)  # from here on, what the index says is signed fact
        self.source.confirm(trust)
        if served is not None:
            self.removed = sorted(set(served.domains) - set(new.domains))
            if self.removed:
                self.reporter.event("domain-removed-upstream", "warning", job=job.name, domains=self.removed,
                                    exportId=new.export_id)
        outcome = self._stage(trust, new, served)
        self.state.save_probe(*key, ProbeState(token, new.export_id, checked_at))
        shutil.rmtree(self.partial, ignore_errors=True)  # every download completed
        return outcome

    def _candidates(self) -> dict[str, list[tuple[Path, int]]]:
        """digest → local files that should hold it (the served export's first, then the kept ones'), by what
        each export's own index lists — a hint only: every candidate is proven before it is reused."""
        served = self.root.active_id()
        ids = self.root.export_ids()
        ordered = ([served] if served in ids else []) + [i for i in reversed(ids) if i != served]
        found: dict[str, list[tuple[Path, int]]] = {}
        for export_id in ordered:
            export_dir = self.root.path / export_id
            try:
                indexes, _ = _local_indexes(export_dir, self.job.kind)
                docs = {rel: orjson.loads(data) for rel, data in indexes.items()}
                for item in layout.listed_files(docs):
                    found.setdefault(item.digest, []).append((export_dir / item.rel, item.size))
            except (OSError, orjson.JSONDecodeError, MalformedBundleError, AttributeError, TypeError):
                continue  # a damaged kept export offers nothing
        return found

    def _stage(self, trust: TrustedIndexSet, new: TrustedIndex, served: TrustedIndex | None) -> str:
        job, root = self.job, self.root
        export_id = new.export_id
        target = root.path / export_id
        # The export `latest` names is repaired in place, even when its index is unreadable.
        repair = export_id == root.active_id()
        resume = False
        if not repair and (target.exists() or target.is_symlink()):
            if not _same_export(target, new):
                raise ExportConflictError(
                    f"{target}: the signed export {export_id} would be published here, but the root holds something "
                    "else under that name (move it away); nothing was changed"
                )
            resume = True  # this very export, moved into place by a run killed before it switched `latest`
        self.proofs.known = self.state.digests(str(job.dest))
        candidates = self._candidates()

        def local(rel: str) -> Path | None:
            path = root.path / served.export_id / rel if served is not None else None
            return path if path is not None and path.is_file() and not path.is_symlink() else None

        with root.staging(export_id, exist_ok=repair or resume) as stage:
            for rel, data in [*new.indexes.items(), *new.signatures.items()]:
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_bytes(data)
            wants: list[Want] = []
            linked: dict[str, Path] = {}
            for item in new.files:
                have = next((p for p, size in candidates.get(item.digest, ())
                             if size == item.size and self.proofs.holds(p, item.size, item.digest)), None)
                if have is not None:
                    link_or_copy(have, stage / item.rel)
                    linked[item.rel] = have
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
            try:
                verdict = store.verify_export_dir(stage, job.keys, trust.now)  # the sequence was trust's to decide
            except DigestError as exc:
                if exc.path not in linked:
                    raise
                # A reused file changed under an unchanged record (bit rot keeps the mtime): believe no record,
                # hash every reused file now, fetch the damaged ones, verify once more.
                self._refetch(new, stage, linked)
                verdict = store.verify_export_dir(stage, job.keys, trust.now)
            if verdict.product != job.kind or verdict.export_id != export_id or verdict.sequence != new.sequence:
                raise MalformedBundleError("mirror/", "the staged export is not the one its signed index describes")
            self._remember(stage, new)
            if repair or resume:
                root.repair(stage, export_id)
                self.repaired_dir = target
                if job.repair:
                    self._heal_kept(new, target, candidates)
                if repair:
                    return REPAIRED
                root.switch(export_id)
                root.prune(job.keep)
                return PUBLISHED
            root.commit(stage, export_id, job.keep)
        return PUBLISHED

    def _refetch(self, new: TrustedIndex, stage: Path, linked: dict[str, Path]) -> None:
        """Replace every staged file linked from a local file that does not hash to its signed digest."""
        self.proofs.rehash = True
        self.proofs.proven.clear()
        wants = []
        for item in new.files:
            have = linked.get(item.rel)
            if have is not None and not self.proofs.holds(have, item.size, item.digest):
                (stage / item.rel).unlink()
                self.rec.files_reused -= 1
                self.rec.bytes_reused -= item.size
                wants.append(Want(item.rel, item.size, item.digest, optional=item.optional))
        self.count(self.source.fetch(wants, stage, self.partial, self.progress))

    def _heal_kept(self, new: TrustedIndex, served: Path, candidates: dict[str, list[tuple[Path, int]]]) -> None:
        """``--repair``: every file of a kept export whose bytes the repaired export holds (verified just now) is
        hashed; a damaged one becomes a hard link to the sound bytes — one atomic rename, so an ``@<exportId>``
        reader sees old or sound bytes, never a mix."""
        by_digest = {item.digest: served / item.rel for item in new.files}
        for digest, paths in candidates.items():
            good = by_digest.get(digest)
            if good is None or not good.is_file():
                continue
            for path, size in paths:
                if path.is_relative_to(served) or not path.is_file() or self.proofs.holds(path, size, digest):
                    continue
                tmp = path.with_name(f".{path.name}.heal-{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                os.link(good, tmp)
                os.replace(tmp, path)
                self.proofs.damaged.pop(path, None)
                self.proofs.good.add(path)

    def _remember(self, stage: Path, new: TrustedIndex) -> None:
        """Record the digest of every verified file just staged (its inode is the published file's)."""
        rows: Record = {}
        for item in new.files:
            with contextlib.suppress(OSError):
                st = (stage / item.rel).lstat()
                rows[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, item.digest)
        self.state.save_digests(str(self.job.dest), rows)


def _signatures(rels: list[str], local: Callable[[str], Path | None], optional: bool = False) -> list[Want]:
    """The detached ``.jws`` and ``.sig`` of each path (both optional for an optional file)."""
    return [
        Want(rel + suffix, SIGNATURE_CAP, local=local(rel + suffix), optional=optional)
        for rel in sorted(rels)
        for suffix in layout.SIGNATURE_SUFFIXES
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
    run = _Run(job, source, state, reporter, rec)
    error: StellaMirrorError | None = None
    row_id: int | None = None
    try:
        with root.locked():
            try:  # in the history from now on: a run killed from here is marked interrupted by the next one
                row_id = state.begin(rec)
            except Exception as exc:
                reporter.event("history-not-recorded", "warning", job=job.name, error=str(exc))
            try:
                rec.outcome = run.run(full)
            except StellaMirrorError as exc:
                error = exc
            except OSError as exc:
                error = LocalIOError(f"{exc.filename or job.dest}: {exc.strerror or exc}")
            except Exception as exc:
                error = StellaMirrorError(f"unexpected {type(exc).__name__}: {exc}")
            _finish(job, root, rec, error, started, run)
    except LockedError as exc:
        error = exc  # the run holding the lock owns the status file: only the history hears of this one
        rec.outcome, rec.error = exc.kind, str(exc)
    except OSError as exc:
        error = LocalIOError(f"{job.dest}: cannot lock the export root: {exc.strerror or exc}")
        rec.outcome, rec.error = error.kind, str(error)
    rec.ended_at = rfc3339(utcnow())
    try:
        if rec.outcome == UNCHANGED and not record_unchanged:
            if row_id is not None:
                state.forget(row_id)
        else:
            state.record(rec, row_id)
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
        **({"warning": rec.warning} if rec.warning else {}),
    )
    return rec


def _finish(job: Job, root: ExportRoot, rec: RunRecord, error: StellaMirrorError | None, started: datetime,
            run: _Run) -> None:
    """Fill in what the root serves now and write its status file (under the lock)."""
    if error is not None:
        rec.outcome, rec.error = error.kind, str(error)
    served = load_served(root, TrustedIndexSet(job.kind, job.keys, utcnow()))
    rec.export_id = served.export_id if served else None
    rec.sequence = served.sequence if served else None
    previous = read_status(job.dest)

    def rel(path: Path) -> str:
        return path.relative_to(job.dest).as_posix()

    damaged = {d for d in (previous.damaged if previous else ()) if (job.dest / d).is_file()}
    damaged -= {rel(p) for p in run.proofs.good}
    damaged |= {rel(p) for p in run.proofs.damaged if p.is_file()}
    if run.repaired_dir is not None and error is None:  # its damaged files were replaced by verified ones
        damaged = {d for d in damaged if not d.startswith(run.repaired_dir.name + "/")}
    if error is None and rec.outcome == PUBLISHED:
        removed = tuple(run.removed)
    else:
        removed = previous.removed_upstream if previous and previous.export_id == rec.export_id else ()
    notes = []
    if run.removed:
        notes.append(f"domains removed upstream: {', '.join(run.removed)}")
    if damaged:
        notes.append(f"{len(damaged)} damaged local file(s), e.g. {sorted(damaged)[0]} (sync --repair)")
    rec.warning = "; ".join(notes) or None
    status = SyncStatus(
        source=rec.source,
        last_attempt_at=started,
        last_outcome=OK if error is None else error.kind,
        last_success_at=utcnow() if error is None else (previous.last_success_at if previous else None),
        export_id=rec.export_id,
        sequence=rec.sequence,
        error=rec.error,
        generated_at=served.generated_at if served else None,
        expires_at=served.expires_at if served else None,
        damaged=tuple(sorted(damaged)),
        removed_upstream=removed,
    )
    with contextlib.suppress(OSError):  # a full disk must not hide the run's real error; the history has it
        write_status(job.dest, status)
