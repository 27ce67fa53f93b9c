"""The Concelier export: sources → records → alias merge → signed bundles per domain.

Memory stays bounded as the corpus grows: records never stay in memory together.

1. *Read* (a process pool of ``workers`` readers): each document becomes compact canonical records,
   appended to a spill file in the staging directory; only each record's offset, its sort key and
   its aliases (for the union-find) are kept.
2. *Group*: union-find over aliases; each group's key is its lowest CVE, else its best record's id.
3. *Merge + write*: groups stream in key order; each group's records are read back from the spill
   file, folded (``merge.merge``), filtered per domain and streamed into ``bundle.json`` by
   ``bundle.writer``. The first domain's pass also writes the merged advisories to a second spill
   file (with a bit mask of the domains that select them), which later domains stream from.

Delta (B7): next to each export, ``state/<domain>.digests.jsonl`` lists ``[advisoryKey, sha256]`` of
every published advisory, sorted by key (the digest is over the advisory's canonical bytes as they
appear in the bundle). The next export compares its stream against the previous active export's
file with a merge-join — constant memory — to fill ``manifest.delta``. The file lives outside
``mirror/``, so it is never served; when an older export lacks it, its bundle is read instead (up to
``DELTA_FALLBACK_MAX_BYTES``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from array import array
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
    RawAdvisory,
    read_sequence,
    write_concelier_export,
)
from stella_mirror.concelier import grouping
from stella_mirror.concelier import merge as mergelib
from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.grouping import Groups
from stella_mirror.concelier.model import Advisory
from stella_mirror.concelier.sources import DEFAULT_MAX_DOCUMENT_BYTES, SourceSpec, iter_files, order_key
from stella_mirror.concelier.staging import (
    CHUNK_DOCUMENTS,
    Chunk,
    StageConfig,
    StagedRecords,
    bucket_count,
    read_chunks,
)
from stella_mirror.errors import ConfigError, ExportRejectedError
from stella_mirror.publish import ExportRoot, check_export_id, next_sequence
from stella_mirror.timeutil import rfc3339, utcnow

STATE_DIR = "state"
DELTA_FALLBACK_MAX_BYTES = 256 * 1024 * 1024
_DOMAIN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_IN_PROCESS_BELOW = 400  # documents; under this a process pool costs more than it saves


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
    documents_skipped: int = 0
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

    @property
    def merges_made(self) -> int:
        """Records folded into another record's advisory (records − advisories)."""
        return self.records - self.advisories


def compact_id(dt: datetime) -> str:
    """The default export id: generated-at in compact form, e.g. ``20261129T163000Z``."""
    return dt.strftime("%Y%m%dT%H%M%SZ")


# --- pass 1: reading -------------------------------------------------------------------------------


def _count_files(spec: SourceSpec) -> int:
    """Files below a source folder (for the progress total and the alias bucket count): an unsorted walk."""
    if not spec.path.is_dir():
        raise ConfigError("sources", f"source {spec.name}: {spec.path} is not a directory")
    n, stack = 0, [str(spec.path)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    n += 1
    return n


def _chunks(req: ExportRequest) -> Iterator[Chunk]:
    """Tasks are generated lazily (the pool pulls them as its pipe drains), so no list of N paths is kept."""
    for spec in req.sources:
        paths: list[str] = []
        for path in iter_files(spec):
            paths.append(path)
            if len(paths) == CHUNK_DOCUMENTS:
                yield Chunk(spec.name, spec.kind, spec.priority, paths)
                paths = []
        if paths:
            yield Chunk(spec.name, spec.kind, spec.priority, paths)


def _read_all(
    req: ExportRequest, summary: ExportSummary, work: Path, domains: list[DomainSpec]
) -> tuple[StagedRecords, int]:
    """Stage every document's records; return them and the number of alias buckets used."""
    total = sum(_count_files(spec) for spec in req.sources)
    workers = req.workers if req.workers is not None else min(2, os.cpu_count() or 1)
    if total < _IN_PROCESS_BELOW:
        workers = 1
    cfg = StageConfig(
        work=str(work),
        buckets=bucket_count(total),
        filters=tuple(d.filter for d in domains),
        kinds={s.name: s.kind for s in req.sources},
        max_bytes=req.max_document_bytes,
    )
    counts: dict[str, int] = {}
    req.progress.phase("reading documents", total)
    for result in read_chunks(cfg, _chunks(req), workers):
        req.progress.advance(result.read + result.skipped + len(result.rejected))
        summary.documents_read += result.read
        summary.documents_skipped += result.skipped
        summary.rejected.extend(Rejected(path, pointer, message) for path, pointer, message in result.rejected)
        counts[result.tag] = counts.get(result.tag, 0) + result.records
    summary.records = sum(counts.values())
    summary.rejected.sort(key=lambda r: r.path)
    req.progress.done()
    return StagedRecords(work, counts), cfg.buckets


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


@dataclass
class _DomainStats:
    count: int = 0
    sources: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, adv: Advisory) -> None:
        self.add_provenance([[p["source"], p["recordedAt"]] for p in adv["provenance"]])

    def add_provenance(self, prov: list[list[Any]]) -> None:
        """Count one advisory from its ``[source, recordedAt]`` pairs."""
        self.count += 1
        seen: set[str] = set()
        for source, recorded in prov:
            stat = self.sources.get(source)
            if stat is None:
                stat = self.sources[source] = [0, None]
            if source not in seen:
                stat[0] += 1
                seen.add(source)
            if recorded and (stat[1] is None or recorded > stat[1]):
                stat[1] = recorded

    def source_stats(self) -> list[SourceStat]:
        return [
            {"source": name, "advisoryCount": c, "lastRecordedAt": last}
            for name, (c, last) in sorted(self.sources.items())
        ]


class _Writer:
    """Feeds ``write_concelier_export``: merges once, serves every domain."""

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
        summary: ExportSummary,
    ) -> None:
        self.req = req
        self.staged = staged
        self.groups = groups
        self.summary = summary
        self.domains = domains
        self.kinds = {s.name: s.kind for s in req.sources}
        self.stats = [_DomainStats() for _ in self.domains]
        self.multi = len(self.domains) > 1
        # Later domains stream from this spill of merged advisories: meta line [key, digest], then the bytes.
        self.merged = _Spill(work / "merged.bin") if self.multi else None
        self.masks = array("q")
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

    def _merge(self, key: str, members: list[int]) -> tuple[bytes, str, int]:
        """Fold a group (or re-key a lone record) and evaluate the domain filters on the result."""
        loaded = [self.staged.record(g) for g in members]
        loaded.sort(key=lambda r: order_key(*r))
        adv = mergelib.merge(key, [rec for _, rec in loaded])
        blob = orjson.dumps(adv, option=orjson.OPT_SORT_KEYS)
        mask = 0
        for i, dom in enumerate(self.domains):
            if dom.filter.matches(adv, self.kinds):
                mask |= 1 << i
                self.stats[i].add(adv)
        return blob, "sha256:" + hashlib.sha256(blob).hexdigest(), mask

    def _merged_stream(self) -> Iterator[tuple[RawAdvisory, str, int]]:
        """First pass over the groups: merge, digest, evaluate every domain's filter."""
        staged, groups, stats = self.staged, self.groups, self.stats
        progress = self.req.progress
        progress.phase("merging and writing", len(groups))
        merged = self.merged
        single_domain = len(self.domains) == 1
        loads = orjson.loads
        for n, (key, first, fast) in enumerate(groups, 1):
            if fast:
                # A record that is an advisory of its own: its staged bytes, digest, mask and provenance
                # are final, so nothing is parsed or serialised again.
                entry = staged.entry(first)
                nl = entry.index(b"\n")
                digest, mask, prov, _priority = loads(entry[:nl])
                blob = entry[nl + 1 :]
                if single_domain:
                    if mask:
                        stats[0].add_provenance(prov)
                else:
                    for i in range(len(stats)):
                        if mask >> i & 1:
                            stats[i].add_provenance(prov)
            else:
                members = groups.members(first)
                blob, digest, mask = self._merge(key, members)
            if merged is not None:
                merged.append(orjson.dumps([key, digest]) + b"\n" + blob)
                self.masks.append(mask)
            if n % 1024 == 0:
                progress.advance(1024)
            yield RawAdvisory(key, blob), digest, mask
        progress.advance(len(groups) % 1024)
        progress.done()
        if merged is not None:
            merged.seal()

    def advisories(self, i: int) -> Iterator[RawAdvisory]:
        """The advisories of domain ``i`` (in domain-id order), sorted by key."""
        bit = 1 << i
        tracker = self._tracker(i)
        if i == 0:
            for adv, digest, mask in self._merged_stream():
                if mask & bit:
                    tracker.see(adv.advisory_key, digest)
                    yield adv
            return
        assert self.merged is not None
        for j, mask in enumerate(self.masks):
            if mask & bit:
                entry = self.merged.get(j)
                nl = entry.index(b"\n")
                key, digest = orjson.loads(entry[:nl])
                tracker.see(key, digest)
                yield RawAdvisory(key, entry[nl + 1 :])

    def delta(self, i: int) -> Delta:
        return self._tracker(i).finish()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        if self.merged is not None:
            self.merged.close()


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
            staged, buckets = _read_all(req, summary, work, domains)
            try:
                if req.strict and summary.rejected:
                    first = summary.rejected[0]
                    raise ExportRejectedError(
                        f"{len(summary.rejected)} document(s) rejected and --strict is set; nothing was published "
                        f"(first: {first.message})"
                    )
                groups = grouping.group(staged, buckets)
                summary.advisories = len(groups)
                summary.merged_advisories = groups.merged
                prev_dir = root.active_dir()
                prev_id = root.active_id() if prev_dir is not None and prev_dir.is_dir() else None
                writer = _Writer(
                    req, domains, staged, groups, work, stage, prev_dir if prev_id else None, prev_id, summary
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
                                sources=lambda i=i: writer.stats[i].source_stats(),  # type: ignore[misc]
                                delta=lambda i=i: writer.delta(i),  # type: ignore[misc]
                            )
                            for i, dom in enumerate(domains)
                        ],
                        req.key,
                    )
                finally:
                    writer.close()
                for i, dom in enumerate(domains):
                    tracker = writer.trackers[i]
                    summary.domains.append(
                        DomainResult(dom.domain_id, writer.stats[i].count, tracker.finish() if tracker else None)
                    )
            finally:
                staged.close()
            shutil.rmtree(work)
            summary.path = root.commit(stage, stamp.export_id, req.keep)
    summary.seconds = time.monotonic() - started
    return summary


ProgressFactory = Callable[[], Progress]
