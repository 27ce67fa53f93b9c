"""The Concelier export: sources → records → alias merge → signed bundles per domain.

Memory stays flat as the corpus grows: records live on disk, and per record the exporting process
keeps only a few integers in arrays.

1. *Read* (:mod:`.staging`; a pool of up to two reader processes): each reader turns documents into
   canonical single-record entries and appends them, with key candidates and bucketed aliases, to
   its own files in the staging directory's ``.work/``.
2. *Group* (:mod:`.grouping`): union-find over aliases one bucket at a time; each group's key is its
   lowest CVE, else its best record's own key; groups are sorted by key with an external sort.
3. *Merge + write*: the reader processes fold windows of consecutive groups into runs of bundle
   bytes per domain, a few windows ahead; the first domain's runs stream into ``bundle.json``
   through ``bundle.writer``, the other domains' runs are spilled and streamed afterwards.

Delta (B7): next to each export, ``state/<domain>.digests.jsonl`` lists ``[advisoryKey, sha256]`` of
every published advisory, sorted by key (the digest is over the advisory's canonical bytes as they
appear in the bundle). The next export compares its stream against the previous active export's
file with a merge-join — constant memory — to fill ``manifest.delta``. The file lives outside
``mirror/``, so it is never served; when an older export lacks it, its bundle is read instead (up to
``DELTA_FALLBACK_MAX_BYTES``).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import re
import shutil
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from stella_mirror.bundle import canonical
from stella_mirror.bundle.model import Delta, SourceStat
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.bundle.writer import (
    ConcelierDomain,
    ExportStamp,
    RawAdvisories,
    read_sequence,
    write_concelier_export,
)
from stella_mirror.concelier import grouping
from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.fold import DomainRun, DomainStats, Group
from stella_mirror.concelier.grouping import Groups
from stella_mirror.concelier.readers import ReaderPool
from stella_mirror.concelier.sources import DEFAULT_MAX_DOCUMENT_BYTES, SourceSpec, iter_file_lists
from stella_mirror.concelier.staging import CHUNK_DOCUMENTS, Chunk, StageConfig, StagedRecords, bucket_count
from stella_mirror.errors import ConfigError, ExportRejectedError
from stella_mirror.publish import ExportRoot, check_export_id, next_sequence
from stella_mirror.timeutil import rfc3339, utcnow

STATE_DIR = "state"
DELTA_FALLBACK_MAX_BYTES = 256 * 1024 * 1024
_DOMAIN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IN_PROCESS_BELOW = 400  # documents; under this a process pool costs more than it saves
_FOLD_WINDOW = 1024  # consecutive groups folded by one reader task (about 2.5 MiB of bundle)
_FOLD_AHEAD = 3  # windows being folded ahead of the writer


class Progress(Protocol):
    """Progress reporting: a rich bar on a terminal, periodic log lines otherwise."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


class NoProgress:
    """Reports nothing."""

    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def done(self) -> None:
        pass


@dataclass(frozen=True)
class DomainSpec:
    """A mirror domain to publish and the filter that selects its advisories."""

    domain_id: str
    display_name: str
    filter: DomainFilter = field(default_factory=DomainFilter)


@dataclass
class ExportRequest:
    """Everything one export needs."""

    sources: list[SourceSpec]
    domains: list[DomainSpec]
    key: SigningKey
    out: Path
    export_id: str | None = None
    generated_at: datetime | None = None
    expires_in: timedelta = timedelta(days=7)
    keep: int = 3
    strict: bool = False
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    workers: int | None = None
    progress: Progress = field(default_factory=NoProgress)


@dataclass(frozen=True)
class Rejected:
    """A document that was not exported, and why."""

    path: str
    pointer: str
    message: str


@dataclass(frozen=True)
class Skipped:
    """A file of a source folder that is not a document of the source's kind, and why."""

    path: str
    reason: str


@dataclass
class DomainResult:
    """What one domain published."""

    domain_id: str
    advisory_count: int = 0
    delta: Delta | None = None


@dataclass
class ExportSummary:
    """The outcome of an export (what the CLI prints)."""

    documents_read: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    records: int = 0
    advisories: int = 0
    merges: int = 0
    merged_advisories: int = 0
    domains: list[DomainResult] = field(default_factory=list)
    export_id: str = ""
    sequence: int = 0
    generated_at: str = ""
    expires_at: str = ""
    path: Path | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each phase, in order (see docs/benchmarks.md)."""

    @property
    def documents_skipped(self) -> int:
        """Files left out without being read as documents (dot files, other extensions, non-CSAF JSON)."""
        return len(self.skipped)

    @property
    def merges_made(self) -> int:
        """Records folded into another record's advisory (records − advisories)."""
        return self.records - self.advisories


class _PhaseClock:
    """Adds the time since the previous lap to a named phase."""

    def __init__(self, phases: dict[str, float]) -> None:
        self._phases = phases
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self._phases[name] = self._phases.get(name, 0.0) + (now - self._last)
        self._last = now


def compact_id(dt: datetime) -> str:
    """The default export id: generated-at in compact form, e.g. ``20261129T163000Z``."""
    return dt.strftime("%Y%m%dT%H%M%SZ")


# --- pass 1: reading -------------------------------------------------------------------------------


def _count_files(spec: SourceSpec) -> int:
    """Files below a source folder (for the progress total and the alias bucket count)."""
    return sum(len(files) for files in iter_file_lists(spec))


def _chunks(req: ExportRequest) -> Iterator[Chunk]:
    """Tasks are generated lazily (the pool pulls them as its pipe drains), so no list of N paths is kept
    beyond one folder's; each task takes the next ``CHUNK_DOCUMENTS`` paths in order, across folders."""
    for spec in req.sources:
        paths: list[str] = []
        for files in iter_file_lists(spec):
            at = 0
            while at < len(files):
                take = files[at : at + CHUNK_DOCUMENTS - len(paths)]
                at += len(take)
                paths = paths + take if paths else take
                if len(paths) == CHUNK_DOCUMENTS:
                    yield Chunk(spec.name, spec.kind, spec.priority, paths)
                    paths = []
        if paths:
            yield Chunk(spec.name, spec.kind, spec.priority, paths)


def _stage_config(req: ExportRequest, work: Path, domains: list[DomainSpec], total: int) -> StageConfig:
    return StageConfig(
        work=str(work),
        buckets=bucket_count(total),
        filters=tuple(d.filter for d in domains),
        kinds={s.name: s.kind for s in req.sources},
        max_bytes=req.max_document_bytes,
    )


def _read_all(
    req: ExportRequest, summary: ExportSummary, pool: ReaderPool, total: int, clock: _PhaseClock
) -> StagedRecords:
    """Stage every document's records."""
    counts: dict[str, int] = {}
    req.progress.phase("reading documents", total)
    for result in pool.read(_chunks(req)):
        req.progress.advance(result.read + len(result.skipped) + len(result.rejected))
        summary.documents_read += result.read
        summary.skipped.extend(Skipped(path, reason) for path, reason in result.skipped)
        summary.rejected.extend(Rejected(path, pointer, message) for path, pointer, message in result.rejected)
        counts[result.tag] = counts.get(result.tag, 0) + result.records
    summary.records = sum(counts.values())
    summary.rejected.sort(key=lambda r: r.path)
    summary.skipped.sort(key=lambda r: r.path)
    req.progress.done()
    staged = StagedRecords(Path(pool.cfg.work), counts)
    clock.lap("read")
    return staged


# --- pass 3: merging and writing -------------------------------------------------------------------


class _DeltaTracker:
    """Merge-join of this export's (key, digest) stream against the previous export's digest list."""

    def __init__(self, previous: Iterator[tuple[str, str]] | None, base: str | None, out: Any) -> None:
        self._prev = previous
        self._base = base
        self._out = out
        self._pending = next(previous, None) if previous is not None else None
        self.added: list[str] = []
        self.changed: list[str] = []
        self.removed: list[str] = []
        self._result: Delta | None = None

    def see(self, key: str, digest: str) -> None:
        self._out.write(orjson.dumps([key, digest]) + b"\n")
        if self._prev is None:
            if self._base is not None:
                self.added.append(key)
            return
        while self._pending is not None and self._pending[0] < key:
            self.removed.append(self._pending[0])
            self._pending = next(self._prev, None)
        if self._pending is not None and self._pending[0] == key:
            if self._pending[1] != digest:
                self.changed.append(key)
            self._pending = next(self._prev, None)
        else:
            self.added.append(key)

    def see_run(self, lines: bytes | bytearray) -> None:
        """:meth:`see` for consecutive advisories given as their rendered state-file lines."""
        if self._prev is None and self._base is None:
            self._out.write(lines)  # nothing to compare with: the common case needs no parsing
            return
        for line in lines.splitlines():
            key, digest = orjson.loads(line)
            self.see(key, digest)

    def finish(self) -> Delta:
        """The delta, once the stream has ended (idempotent)."""
        if self._result is None:
            if self._prev is not None:
                while self._pending is not None:
                    self.removed.append(self._pending[0])
                    self._pending = next(self._prev, None)
            self._result = {
                "baseExportId": self._base,
                "added": self.added,
                "changed": self.changed,
                "removed": self.removed,
            }
        return self._result


def _previous_digests(prev_dir: Path | None, domain_id: str) -> Iterator[tuple[str, str]] | None:
    """The previous export's (key, digest) list for a domain, sorted by key; None when it has no such domain."""
    if prev_dir is None:
        return None
    side = prev_dir / STATE_DIR / f"{domain_id}.digests.jsonl"
    if side.is_file():

        def lines() -> Iterator[tuple[str, str]]:
            with side.open("rb") as fh:
                for line in fh:
                    key, digest = orjson.loads(line)
                    yield key, digest

        return lines()
    bundle = prev_dir / "mirror" / domain_id / "bundle.json"
    if not bundle.is_file():
        return None
    if bundle.stat().st_size > DELTA_FALLBACK_MAX_BYTES:
        return None
    with contextlib.suppress(OSError, orjson.JSONDecodeError, KeyError, TypeError):
        doc = orjson.loads(bundle.read_bytes())
        pairs = sorted(
            (a["advisoryKey"], "sha256:" + hashlib.sha256(canonical.dumps_compact(a)).hexdigest())
            for a in doc["advisories"]
        )
        return iter(pairs)
    return None


class _Spill:
    """Append-only file of byte blobs, read back with ``pread`` (mapped pages would count as resident memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("wb", buffering=1 << 20)
        self._offsets = array("q", [0])
        self._fd: int | None = None

    def append(self, blob: bytes) -> None:
        self._fh.write(blob)
        self._offsets.append(self._offsets[-1] + len(blob))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def seal(self) -> None:
        self._fh.close()
        self._fd = os.open(self.path, os.O_RDONLY)

    def get(self, i: int) -> bytes:
        assert self._fd is not None
        start = self._offsets[i]
        return os.pread(self._fd, self._offsets[i + 1] - start, start)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _source_stats(stats: DomainStats) -> list[SourceStat]:
    return [
        {"source": name, "advisoryCount": c, "lastRecordedAt": last}
        for name, (c, last) in sorted(stats.sources.items())
    ]


class _Writer:
    """Feeds ``write_concelier_export``: folds every group once and serves every domain.

    Groups go to the reader processes in windows of consecutive groups (key order), a few windows
    ahead of the writer; each comes back as one run of bundle bytes per domain (see
    :func:`.fold.fold_window`). The first domain's runs are written as they arrive; the others' are
    spilled to a file each and streamed from there when their bundle is written.
    """

    def __init__(
        self,
        req: ExportRequest,
        domains: list[DomainSpec],
        staged: StagedRecords,
        groups: Groups,
        work: Path,
        stage: Path,
        prev_dir: Path | None,
        prev_id: str | None,
        clock: _PhaseClock,
        pool: ReaderPool,
    ) -> None:
        self.req = req
        self.pool = pool
        self.clock = clock
        self.staged = staged
        self.groups = groups
        self.domains = domains
        self.stats = [DomainStats() for _ in self.domains]
        # Runs of later domains: a meta line [firstKey, lastKey, count], then the run's bytes.
        self.spills = [_Spill(work / f"domain-{i}.bin") for i in range(1, len(domains))]
        (stage / STATE_DIR).mkdir(parents=True, exist_ok=True)
        self.state_dir = stage / STATE_DIR
        self.prev_dir = prev_dir
        self.prev_id = prev_id
        self.trackers: list[_DeltaTracker | None] = [None] * len(self.domains)
        self._files: list[Any] = []

    def _tracker(self, i: int) -> _DeltaTracker:
        tracker = self.trackers[i]
        if tracker is None:
            dom = self.domains[i]
            fh = (self.state_dir / f"{dom.domain_id}.digests.jsonl").open("wb", buffering=1 << 20)
            self._files.append(fh)
            tracker = _DeltaTracker(_previous_digests(self.prev_dir, dom.domain_id), self.prev_id, fh)
            self.trackers[i] = tracker
        return tracker

    def _windows(self) -> Iterator[list[DomainRun | None]]:
        """Every window's runs, in key order, folded ahead by the reader processes."""
        sizes: deque[int] = deque()

        def windows() -> Iterator[tuple[list[str], list[Group]]]:
            for keys, groups in self.groups.windows(_FOLD_WINDOW):
                sizes.append(len(keys))
                yield keys, groups

        for runs in self.pool.fold(self.staged.layout, windows(), _FOLD_AHEAD):
            yield runs
            self.req.progress.advance(sizes.popleft())

    def _first_domain(self) -> Iterator[RawAdvisories]:
        """Fold everything; write the first domain's runs, spill the others', feed every delta tracker."""
        progress = self.req.progress
        progress.phase("merging and writing", len(self.groups))
        trackers = [self._tracker(i) for i in range(len(self.domains))]
        for runs in self._windows():
            for i, run in enumerate(runs):
                if run is None:
                    continue
                self.stats[i].absorb(run.stats)
                trackers[i].see_run(run.lines)
                if i == 0:
                    yield RawAdvisories(run.first_key, run.last_key, run.count, run.data)
                else:
                    meta = orjson.dumps([run.first_key, run.last_key, run.count])
                    self.spills[i - 1].append(meta + b"\n" + run.data)
        progress.done()
        self.clock.lap("merge + write")
        for spill in self.spills:
            spill.seal()

    def advisories(self, i: int) -> Iterator[RawAdvisories]:
        """The advisories of domain ``i`` (in domain-id order), sorted by key, in runs."""
        if i == 0:
            yield from self._first_domain()
            return
        spill = self.spills[i - 1]
        for j in range(len(spill)):
            entry = spill.get(j)
            nl = entry.index(b"\n")
            first, last, count = orjson.loads(entry[:nl])
            yield RawAdvisories(first, last, count, entry[nl + 1 :])

    def source_stats(self, i: int) -> list[SourceStat]:
        return _source_stats(self.stats[i])

    def delta(self, i: int) -> Delta:
        return self._tracker(i).finish()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        for spill in self.spills:
            spill.close()


def _stamp(req: ExportRequest, sequence: int) -> ExportStamp:
    generated = (req.generated_at or utcnow()).replace(microsecond=0)
    export_id = req.export_id or compact_id(generated)
    return ExportStamp(export_id, sequence, rfc3339(generated), rfc3339(generated + req.expires_in))


def _check_request(req: ExportRequest) -> None:
    if not req.sources:
        raise ConfigError("sources", "at least one source is needed (--source osv:DIR or csaf:DIR)")
    if not req.domains:
        raise ConfigError("domains", "at least one domain is needed")
    ids = [d.domain_id for d in req.domains]
    for i, domain_id in enumerate(ids):
        if not _DOMAIN_ID.match(domain_id):
            raise ConfigError(f"domains.{i}.id", f"{domain_id!r} is not a valid domain id ([a-z0-9][a-z0-9._-]*)")
    if len(set(ids)) != len(ids):
        raise ConfigError("domains", f"domain ids must be unique: {ids}")
    if len(ids) > 62:
        raise ConfigError("domains", "at most 62 domains per export")
    if req.keep < 1:
        raise ConfigError("keep", "must be at least 1")
    if req.expires_in <= timedelta(0):
        raise ConfigError("expiresIn", "must be positive")
    if req.export_id is not None:
        check_export_id(req.export_id)
    names = [spec.name for spec in req.sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            "sources", f"two sources are named {twice[0]!r}: provenance could not tell them apart (give one a name=)"
        )


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """The cyclic collector rarely, while the export runs: it allocates short-lived, acyclic containers
    by the hundred thousand (task lists, sorted runs), and each full collection would walk everything
    the process holds. What existed before is frozen out of its view; both are undone afterwards."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run_export(req: ExportRequest) -> ExportSummary:
    """Read, merge, write, sign and publish one Concelier export; return what happened.

    With ``strict``, any rejected document raises :class:`ExportRejectedError` before anything is
    published: the staging directory is removed and ``latest`` is untouched.
    """
    _check_request(req)
    started = time.monotonic()
    summary = ExportSummary()
    root = ExportRoot(req.out)
    with root.locked():
        sequence = next_sequence(root, read_sequence)
        stamp = _stamp(req, sequence)
        summary.export_id, summary.sequence = stamp.export_id, stamp.sequence
        summary.generated_at, summary.expires_at = stamp.generated_at, stamp.expires_at
        with root.staging(stamp.export_id) as stage:
            work = stage / ".work"
            work.mkdir()
            domains = sorted(req.domains, key=lambda d: d.domain_id)
            clock = _PhaseClock(summary.phases)
            total = sum(_count_files(spec) for spec in req.sources)
            clock.lap("walk")
            workers = req.workers if req.workers is not None else min(2, os.cpu_count() or 1)
            if total < _IN_PROCESS_BELOW:
                workers = 1
            cfg = _stage_config(req, work, domains, total)
            with _few_collections(), ReaderPool(cfg, workers, slots=_FOLD_AHEAD + 1) as pool:
                staged = _read_all(req, summary, pool, total, clock)
                if req.strict and summary.rejected:
                    first = summary.rejected[0]
                    raise ExportRejectedError(
                        f"{len(summary.rejected)} document(s) rejected and --strict is set; nothing was "
                        f"published (first: {first.message})"
                    )
                groups = grouping.group(staged, cfg.buckets, clock.lap, pool)
                summary.advisories = len(groups)
                summary.merged_advisories = groups.merged
                prev_dir = root.active_dir()
                prev_id = root.active_id() if prev_dir is not None and prev_dir.is_dir() else None
                writer = _Writer(
                    req, domains, staged, groups, work, stage, prev_dir if prev_id else None, prev_id, clock, pool
                )
                try:
                    write_concelier_export(
                        stage,
                        stamp,
                        [
                            ConcelierDomain(
                                dom.domain_id,
                                dom.display_name,
                                writer.advisories(i),
                                sources=lambda i=i: writer.source_stats(i),  # type: ignore[misc]
                                delta=lambda i=i: writer.delta(i),  # type: ignore[misc]
                            )
                            for i, dom in enumerate(domains)
                        ],
                        req.key,
                    )
                finally:
                    writer.close()
                clock.lap("sign, other domains, index")
                for i, dom in enumerate(domains):
                    tracker = writer.trackers[i]
                    summary.domains.append(
                        DomainResult(dom.domain_id, writer.stats[i].count, tracker.finish() if tracker else None)
                    )
            shutil.rmtree(work)
            summary.path = root.commit(stage, stamp.export_id, req.keep)
            clock.lap("publish")
    summary.seconds = time.monotonic() - started
    return summary


ProgressFactory = Callable[[], Progress]
