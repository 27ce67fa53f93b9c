"""Pass 1 of the Concelier export: documents → records staged on disk by the readers themselves.

Each reader — a pool process, or the exporting process itself for small inputs — reads chunks of
documents and appends everything it learns to its own files in the work directory (``<tag>`` is the
reader's process id), so records never travel through a pipe and the exporting process holds nothing
per record while they are read:

``rec-<tag>.bin``
    one entry per record: a meta line ``[blobDigest, domainMask, [[source, recordedAt], …], priority]``,
    the record's state-file line ``[ownKey, blobDigest]`` and then its canonical bytes — exactly what
    the bundle and the state file carry when the record is an advisory of its own, so pass 3 can copy
    both unchanged;
``off-<tag>.bin``
    the start offset of each entry (native int64);
``key-<tag>.jsonl``
    one line per flush: ``[lowestCve|null, ownKey, lowestCve|null, ownKey, …]``, a pair per record in
    file order, for choosing each merge group's advisory key;
``alias-<tag>-<b>.jsonl``
    lines ``[k, alias, k, alias, …]`` (``k`` = the record's index within this reader), one file per
    bucket ``b = crc32(alias) mod buckets``, so the union over aliases can be done one bucket at a
    time (:mod:`stella_mirror.concelier.grouping`).

A reader flushes all its files at the end of every chunk, so when the last chunk result arrives
every byte is on disk (in the page cache). :class:`StagedRecords` then gives records dense indices
(readers in tag order, records in file order), writes their offsets to ``offsets.bin`` and reads
entries back with ``pread``.

The same processes then fold the merge groups (:func:`fold_window`): windows of consecutive groups
in key order become runs of bundle bytes per domain, ahead of the exporter that writes them.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import mmap
import multiprocessing
import os
import struct
import traceback
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from operator import ne
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import orjson

from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.merge import merge
from stella_mirror.concelier.model import Advisory, lowest_cve
from stella_mirror.concelier.sources import canonical_record, load_records, order_key

CHUNK_DOCUMENTS = 256  # documents per task: big enough that a task's overhead is noise, small enough to balance
_SORT = orjson.OPT_SORT_KEYS
_INT64 = struct.Struct("=q")  # the offset files: native int64, as array("q") reads them


@dataclass(frozen=True)
class StageConfig:
    """What every reader needs to know (sent once, when the pool starts)."""

    work: str
    buckets: int
    filters: tuple[DomainFilter, ...]
    """The domains' filters in domain-id order: bit ``i`` of a record's mask is domain ``i``."""
    kinds: dict[str, str]
    max_bytes: int

    @property
    def monotone(self) -> bool:
        """Whether an advisory merged from records is in every domain any of its records is in.

        True unless a filter selects by severity: ecosystems and sources only accumulate in a merge,
        a severity may change. Then each domain's per-source statistics can be counted per record
        while staging (:class:`SourceTally`) and only corrected for the records that merge.
        """
        return not any("severity" in f.clauses for f in self.filters)


@dataclass(frozen=True)
class Chunk:
    """Documents of one source for one reader task."""

    source: str
    kind: str
    priority: int
    paths: list[str]


SourceTally = dict[tuple[int, str], list[Any]]
"""Per ``(domainMask, source)``: ``[records, latest recordedAt]`` of records staged with that mask."""


@dataclass
class ChunkResult:
    """What a reader reports for one chunk (all records are already on disk)."""

    tag: str
    read: int = 0
    skipped: int = 0
    records: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, pointer, message) of each rejected document."""
    tally: SourceTally = field(default_factory=dict)
    """The chunk's records by mask and source (only when the filters are monotone)."""


def bucket_count(documents: int) -> int:
    """Alias buckets for a corpus: about 64k aliases per bucket (4 per document assumed), a power of two ≤ 256."""
    want = documents * 4 // 65536 + 1
    buckets = 1
    while buckets < want and buckets < 256:
        buckets *= 2
    return buckets


def domain_mask(cfg: StageConfig, adv: Advisory) -> int:
    """Bit ``i`` set when domain ``i``'s filter selects the advisory."""
    mask = 0
    for i, filt in enumerate(cfg.filters):
        if not filt.clauses or filt.matches(adv, cfg.kinds):
            mask |= 1 << i
    return mask


class Staged(NamedTuple):
    """An advisory as staged: its entry's two lines, its canonical bytes and what the fold needs to know."""

    head: bytes
    """The meta line ``[blobDigest, domainMask, [[source, recordedAt], …], priority]`` and the state line
    ``[advisoryKey, blobDigest]``, each with its newline."""
    blob: bytes
    """``orjson.dumps(advisory, option=OPT_SORT_KEYS)``: the advisory as the bundle carries it."""
    mask: int
    prov: list[list[Any]]
    """``[source, recordedAt]`` of each provenance entry."""

    @property
    def state(self) -> bytes:
        """The state line, with its newline."""
        return self.head[self.head.index(b"\n") + 1 :]


def stage_entry(cfg: StageConfig, adv: Advisory, priority: int) -> Staged:
    """An advisory's staged entry (``head + blob`` is what the staging file holds)."""
    blob = orjson.dumps(adv, option=_SORT)
    mask = domain_mask(cfg, adv)
    prov = [[p["source"], p["recordedAt"]] for p in adv["provenance"]]
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    head = b"%b\n%b\n" % (orjson.dumps([digest, mask, prov, priority]), orjson.dumps([adv["advisoryKey"], digest]))
    return Staged(head, blob, mask, prov)


def split_entry(entry: bytes) -> tuple[list[Any], bytes]:
    """``(meta, canonical bytes)`` of a staged entry."""
    nl = entry.index(b"\n")
    return orjson.loads(entry[:nl]), entry[entry.index(b"\n", nl + 1) + 1 :]


def add_tally(into: SourceTally, other: SourceTally) -> None:
    """Add another tally's counts (and latest ``recordedAt``) to ``into``."""
    for key, (n, last) in other.items():
        slot = into.get(key)
        if slot is None:
            into[key] = [n, last]
            continue
        slot[0] += n
        if last and (slot[1] is None or last > slot[1]):
            slot[1] = last


def tally(into: SourceTally, mask: int, prov: list[list[Any]], sign: int = 1) -> None:
    """Count one record (``sign`` -1: take it back) under its mask, once per source it names."""
    seen: set[str] = set()
    for source, recorded in prov:
        if source in seen:
            continue
        seen.add(source)
        _bump(into, (mask, source), sign, recorded if sign > 0 else None)


def _bump(slots: dict[Any, list[Any]], key: Any, count: int, recorded: str | None) -> None:
    """``slots[key]`` (``[count, latest recordedAt]``, made on first use) += ``count``, latest of ``recorded``."""
    slot = slots.get(key)
    if slot is None:
        slot = slots[key] = [0, None]
    slot[0] += count
    if recorded and (slot[1] is None or recorded > slot[1]):
        slot[1] = recorded


class Stager:
    """One reader's staging files; turns documents into staged records."""

    def __init__(self, cfg: StageConfig, tag: str) -> None:
        self.cfg = cfg
        self.tag = tag
        work = Path(cfg.work)
        self._rec = (work / f"rec-{tag}.bin").open("ab")
        self._off = (work / f"off-{tag}.bin").open("ab")
        # A chunk's entries and their offsets, written out by flush().
        self._recbuf = bytearray()
        self._offbuf = bytearray()
        self._keys = (work / f"key-{tag}.jsonl").open("ab", buffering=1 << 16)
        # The chunk's key candidates ``[lowestCve, ownKey, …]`` and alias pairs per bucket ``[k, alias, …]``:
        # flush() writes each list as one JSON line.
        self._key_items: list[str | None] = []
        self._alias_paths = [work / f"alias-{tag}-{b}.jsonl" for b in range(cfg.buckets)]
        self._alias_files: list[IO[bytes] | None] = [None] * cfg.buckets
        self._buckets: list[list[int | str]] = [[] for _ in range(cfg.buckets)]
        self._pos = 0
        self.count = 0
        self._tally: SourceTally | None = {} if cfg.monotone else None

    def add(self, record: Advisory, priority: int) -> None:
        """Stage one source record."""
        final = canonical_record(record)
        staged = stage_entry(self.cfg, final, priority)
        if self._tally is not None:
            tally(self._tally, staged.mask, staged.prov)
        self._recbuf += staged.head
        self._recbuf += staged.blob
        self._offbuf += _INT64.pack(self._pos)
        self._pos += len(staged.head) + len(staged.blob)
        own = final["advisoryKey"]
        names = final["aliases"]
        if own not in names:
            names = [*names, own]
        self._key_items += (lowest_cve(names), own)
        k = self.count
        buckets = self._buckets
        mask_b = self.cfg.buckets - 1
        for alias in names:
            buckets[zlib.crc32(alias.encode("utf-8", "surrogatepass")) & mask_b] += (k, alias)
        self.count += 1

    def read_chunk(self, chunk: Chunk) -> ChunkResult:
        """Read, map and stage every document of a chunk; flush the files."""
        result = ChunkResult(self.tag)
        before = self.count
        for path in chunk.paths:
            status, payload = load_records(path, chunk.kind, chunk.source, self.cfg.max_bytes)
            self._settle(status, payload, path, chunk.priority, result)
        result.records = self.count - before
        if self._tally:
            result.tally, self._tally = self._tally, {}
        self.flush()
        return result

    def _settle(self, status: str, payload: object, path: str, priority: int, result: ChunkResult) -> None:
        """Stage what the general path read from a document, or count it as skipped or rejected."""
        if status == "ok":
            result.read += 1
            for record in cast(list[Advisory], payload):
                self.add(record, priority)
        elif status == "skipped":
            result.skipped += 1
        else:
            pointer, message = cast(tuple[str, str], payload)
            result.rejected.append((path, pointer, message))

    def flush(self) -> None:
        """Push everything staged so far to the files."""
        for out, buf in ((self._rec, self._recbuf), (self._off, self._offbuf)):
            out.write(buf)  # a buffered writer writes all of it (or raises)
            out.flush()
            buf.clear()
        if self._key_items:
            self._keys.write(orjson.dumps(self._key_items) + b"\n")
            self._key_items.clear()
        self._keys.flush()
        for b, items in enumerate(self._buckets):
            if items:
                fh = self._alias_files[b]
                if fh is None:
                    fh = self._alias_files[b] = self._alias_paths[b].open("ab")
                fh.write(orjson.dumps(items) + b"\n")
                fh.flush()
                items.clear()

    def close(self) -> None:
        """Flush and close the files."""
        self.flush()
        for fh in (self._rec, self._off, self._keys, *self._alias_files):
            if fh is not None:
                fh.close()


def alias_pairs(files: list[tuple[int, str]]) -> array:  # type: ignore[type-arg]
    """Pairs ``a, g`` of records to join because they name the same alias, from one alias bucket.

    ``files`` are the bucket's files of every reader with the index of that reader's first record.
    Every alias is mapped to one record naming it (the last one, as ``dict()`` keeps it); every other
    record naming it is paired with that one. Exact: the alias strings themselves are compared, the
    hash only chose the bucket. Everything but the (few) pairs runs in builtins.
    """
    names: list[str] = []
    owners: list[int] = []
    for base, path in files:
        with open(path, "rb") as fh:
            for line in fh:
                items = orjson.loads(line)
                names += items[1::2]
                owners += items[0::2] if base == 0 else [k + base for k in items[0::2]]
    first = dict(zip(names, owners, strict=True))
    canon = list(map(first.__getitem__, names))
    del first, names
    pairs = array("i")
    for a, g in compress(zip(canon, owners, strict=True), map(ne, canon, owners)):
        pairs.append(a)
        pairs.append(g)
    return pairs


# --- the reader processes ----------------------------------------------------------------------------

_worker_cfg: StageConfig | None = None
_worker_stager: Stager | None = None


def _init_worker(cfg: StageConfig) -> None:
    global _worker_cfg
    _worker_cfg = cfg
    # Reader processes build short-lived, acyclic containers by the million; the cyclic collector
    # would only walk them. Objects inherited from the parent are frozen out of its view as well.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)


def _read_chunk_in_worker(chunk: Chunk) -> ChunkResult:
    global _worker_stager
    if _worker_stager is None:
        assert _worker_cfg is not None
        _worker_stager = Stager(_worker_cfg, str(os.getpid()))
    return _worker_stager.read_chunk(chunk)


@dataclass
class DomainStats:
    """A domain's advisory count and, per source, advisories and latest ``recordedAt`` (for the manifest)."""

    count: int = 0
    sources: dict[str, list[Any]] = field(default_factory=dict)

    def add_provenance(self, prov: list[list[Any]]) -> None:
        """Count one advisory from its ``[source, recordedAt]`` pairs."""
        self.count += 1
        seen: set[str] = set()
        for source, recorded in prov:  # each source counts once per advisory
            self.add_source(source, 0 if source in seen else 1, recorded)
            seen.add(source)

    def add_source(self, source: str, count: int, recorded: str | None) -> None:
        """Add ``count`` advisories naming ``source`` (negative: take back), the latest recorded at ``recorded``."""
        _bump(self.sources, source, count, recorded)

    def absorb(self, other: DomainStats) -> None:
        """Add the statistics of other advisories."""
        self.count += other.count
        for source, (n, last) in other.sources.items():
            self.add_source(source, n, last)


@dataclass
class DomainRun:
    """What one window contributes to one domain: consecutive advisories in key order."""

    first_key: str
    last_key: str
    count: int
    data: bytes | bytearray
    """The advisories' canonical bytes joined by ``,``."""
    lines: bytes | bytearray
    """Their ``[key, digest]`` lines for the delta state file."""
    stats: DomainStats
    spilled: tuple[str, int, int, int] | None = None
    """Set by a reader process instead of ``data`` and ``lines``: (file, offset, size of data, size of lines)
    where it wrote them, one after the other; the file is ``""`` for the pool's shared memory."""


@dataclass(frozen=True)
class Layout:
    """Where staged entries are, for reader processes: record ``i`` spans ``offsets[i]`` to ``offsets[i+1]``
    of the staging files laid end to end (file ``f`` starts at ``starts[f]``)."""

    offsets: str
    """File of the int64 offsets."""
    paths: tuple[str, ...]
    starts: tuple[int, ...]


class _Entries:
    """Staged entries from a :class:`Layout`, through read-only memory maps (offsets loaded once per process).

    A fold reads ~1,000 entries scattered over the staging files: slicing a map costs a fraction of a
    ``pread`` system call each. Mapped pages count as this process's resident memory while they are
    mapped in, so :meth:`release` drops them from the mapping after every window (the page cache
    keeps them): resident memory stays bounded by one window's entries, not the corpus.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.offsets = array("q")
        self.offsets.frombytes(Path(layout.offsets).read_bytes())
        self.maps: list[mmap.mmap] = []
        for path in layout.paths:  # only readers that staged records have files here: none is empty
            with open(path, "rb") as fh:
                self.maps.append(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        self.views = [memoryview(m) for m in self.maps]
        self._starts = layout.starts
        self._single = len(layout.starts) == 1

    def locate(self, i: int) -> tuple[int, int, int]:
        """``(file, start, end)`` of entry ``i`` within its staging file."""
        start, end = self.offsets[i], self.offsets[i + 1]
        if self._single:
            return 0, start, end
        f = bisect.bisect_right(self._starts, start) - 1
        base = self._starts[f]
        return f, start - base, end - base

    def get(self, i: int) -> bytes:
        f, start, end = self.locate(i)
        return self.maps[f][start:end]

    def parts(self, i: int) -> tuple[memoryview, memoryview, memoryview]:
        """Entry ``i``'s meta line, its state line (with the newline) and its canonical bytes, as views
        into the map: nothing copied until a run is joined."""
        f, start, end = self.locate(i)
        m, view = self.maps[f], self.views[f]
        nl = m.find(b"\n", start, end)
        nl2 = m.find(b"\n", nl + 1, end)
        return view[start:nl], view[nl + 1 : nl2 + 1], view[nl2 + 1 : end]

    def release(self) -> None:
        """Drop the pages read so far from this process's mappings (not from the page cache)."""
        for m in self.maps:
            m.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        for view in self.views:
            view.release()
        for m in self.maps:
            m.close()
        self.views, self.maps = [], []


def fold_window(cfg: StageConfig, entries: _Entries, keys: list[str], spec: array) -> list[DomainRun | None]:  # type: ignore[type-arg]
    """Turn consecutive groups into bundle runs, one per domain (None where a domain selects none of them).

    ``spec`` lists each group as ``0, record`` when its one record's entry is final as staged, else as
    ``n, record₁ … recordₙ``: those are folded here — sorted into merge order (source priority,
    document id, digest, key), so the result does not depend on which reader staged which record, and
    merged under the group key.

    With monotone filters (:attr:`StageConfig.monotone`) the staging tallies already counted every
    record's sources; a record final as staged is then copied without parsing anything but (with
    filters) its mask, and a folded group takes its records' tallies back and counts itself instead.
    Without filters every domain selects every advisory: the window is folded once
    (:func:`_fold_unfiltered`) and its run shared by the domains.
    """
    n = len(cfg.filters)
    if cfg.monotone and not any(f.clauses for f in cfg.filters):
        run = _fold_unfiltered(cfg, entries, keys, spec)
        entries.release()
        shared: list[DomainRun | None] = [run]
        for _ in range(n - 1):
            copy = DomainRun(run.first_key, run.last_key, run.count, run.data, run.lines, _copy_stats(run.stats))
            shared.append(copy)
        return shared
    monotone = cfg.monotone
    blobs: list[list[bytes | memoryview]] = [[] for _ in range(n)]
    lines: list[list[bytes | memoryview]] = [[] for _ in range(n)]
    firsts: list[str | None] = [None] * n
    lasts: list[str] = [""] * n
    stats = [DomainStats() for _ in range(n)]
    correction: SourceTally = {}
    blob: bytes | memoryview
    line: bytes | memoryview
    prov: list[list[Any]] | None
    pos = 0
    for key in keys:
        size = spec[pos]
        if size == 0:
            # Final as staged: blob and state line are views into the map, copied once, by the joins below.
            meta, line, blob = entries.parts(spec[pos + 1])
            pos += 2
            _digest, mask, prov, _priority = orjson.loads(meta)
            if monotone:
                prov = None
        else:
            members = spec[pos + 1 : pos + 1 + size]
            blob, line, mask, prov = _fold_group(cfg, entries, key, members, correction if monotone else None)
            pos += 1 + size
        for d in range(n):
            if mask >> d & 1:
                if firsts[d] is None:
                    firsts[d] = key
                lasts[d] = key
                blobs[d].append(blob)
                lines[d].append(line)
                if prov is None:
                    stats[d].count += 1
                else:
                    stats[d].add_provenance(prov)
    for (mask, source), (count, _last) in correction.items():
        for d in range(n):
            if mask >> d & 1:
                stats[d].add_source(source, count, None)
    runs: list[DomainRun | None] = []
    for d in range(n):
        first = firsts[d]
        if first is None:
            runs.append(None)
        else:
            runs.append(DomainRun(first, lasts[d], len(blobs[d]), b",".join(blobs[d]), b"".join(lines[d]), stats[d]))
    entries.release()
    return runs


def _fold_group(
    cfg: StageConfig, entries: _Entries, key: str, records: Any, correction: SourceTally | None
) -> tuple[bytes, bytes, int, list[list[Any]] | None]:
    """``(blob, state line, mask, provenance pairs)`` of the advisory of a group folded from its records.

    ``correction`` (monotone filters) takes back the records' staging tallies; the caller then counts the
    advisory's provenance.
    """
    members = [split_entry(entries.get(g)) for g in records]
    if correction is not None:
        for meta, _raw in members:
            tally(correction, meta[1], meta[2], -1)
    loaded = [(meta[3], cast(Advisory, orjson.loads(raw))) for meta, raw in members]
    loaded.sort(key=lambda r: order_key(*r))
    staged = stage_entry(cfg, merge(key, [rec for _, rec in loaded]), 0)
    return staged.blob, staged.state, staged.mask, staged.prov


def _fold_unfiltered(cfg: StageConfig, entries: _Entries, keys: list[str], spec: array) -> DomainRun:  # type: ignore[type-arg]
    """:func:`fold_window` when every domain selects every advisory (monotone, no filter): one run."""
    data, lines = bytearray(), bytearray()
    stats = DomainStats()
    correction: SourceTally = {}
    blob: bytes | memoryview
    line: bytes | memoryview
    pos = ki = 0
    while ki < len(keys):
        size = spec[pos]
        if size == 0:
            _meta, line, blob = entries.parts(spec[pos + 1])
            pos += 2
            stats.count += 1
        else:
            blob, line, _mask, prov = _fold_group(cfg, entries, keys[ki], spec[pos + 1 : pos + 1 + size], correction)
            pos += 1 + size
            stats.add_provenance(cast(list[list[Any]], prov))
        if data:
            data += b","
        data += blob
        lines += line
        ki += 1
    for (_mask, source), (count, _last) in correction.items():
        stats.add_source(source, count, None)
    return DomainRun(keys[0], keys[-1], len(keys), data, lines, stats)


def _copy_stats(stats: DomainStats) -> DomainStats:
    return DomainStats(stats.count, {source: list(slot) for source, slot in stats.sources.items()})


_worker_entries: _Entries | None = None
_worker_spills = [0]  # windows this reader has folded (names its spill files)
_worker_shared: mmap.mmap | None = None  # the pool's shared slots (see ReaderPool)

SLOT_BYTES = 6 << 20
"""One shared-memory slot: a folded window's runs (about 2.5 MiB of bundle at 1,024 groups) fit."""


def _fold_in_worker(layout: Layout, keys: list[str], spec: array, slot: int) -> list[DomainRun | None]:  # type: ignore[type-arg]
    """Fold a window; the runs' bytes and state lines go to shared slot ``slot``, not through the pipe.

    Pickling megabytes per window and sending them through a pipe cost more than folding them did (and
    a reader blocked on a full pipe stops folding ahead). The exporter gives each window one of the
    pool's shared-memory slots and copies the runs out when it takes the window
    (:meth:`ReaderPool.fold`): the same few megabytes of memory carry every window, with no system
    call and no new page cache per window. A window too large for a slot (or with no slot: ``-1``)
    goes to a spill file of its own, which the exporter reads and deletes. What does go through the
    pipe stays small (keys, counts, statistics), so neither side can block the other on a full pipe.
    """
    global _worker_entries
    assert _worker_cfg is not None
    if _worker_entries is None or _worker_entries.layout != layout:
        _worker_entries = _Entries(layout)
    runs = fold_window(_worker_cfg, _worker_entries, keys, spec)
    shared = _worker_shared
    if shared is not None and slot >= 0:
        size = sum(len(run.data) + len(run.lines) for run in runs if run is not None)
        if size <= SLOT_BYTES:
            at = slot * SLOT_BYTES
            for run in runs:
                if run is not None:
                    run.spilled = ("", at, len(run.data), len(run.lines))
                    for blob in (run.data, run.lines):
                        shared[at : at + len(blob)] = blob
                        at += len(blob)
                    run.data = run.lines = b""
            return runs
    path = str(Path(_worker_cfg.work) / f"fold-{os.getpid()}-{_worker_spills[0]}.bin")
    _worker_spills[0] += 1
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        size = 0
        for run in runs:
            if run is not None:
                for blob in (run.data, run.lines):
                    view = memoryview(blob)
                    while view:
                        view = view[os.write(fd, view) :]
                run.spilled = (path, size, len(run.data), len(run.lines))
                size += len(run.data) + len(run.lines)
                run.data = run.lines = b""
    finally:
        os.close(fd)
    return runs


def _reader_main(conn: Connection, cfg: StageConfig, shared: mmap.mmap | None) -> None:
    """A reader process: run tasks from the pipe, send each result (or the exception) back, in order."""
    global _worker_shared
    _init_worker(cfg)
    _worker_shared = shared
    tasks: dict[str, Callable[..., Any]] = {
        "read": _read_chunk_in_worker,
        "fold": _fold_in_worker,
        "pairs": alias_pairs,
    }
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        task_id, kind, args = message
        try:
            reply: tuple[int, bool, Any] = (task_id, True, tasks[kind](*args))
        except BaseException as exc:  # every failure goes back to the exporter, which raises it
            reply = (task_id, False, exc)
        try:
            conn.send(reply)
        except Exception:  # the exception itself may not pickle: send its text
            conn.send((task_id, False, RuntimeError("".join(traceback.format_exception(reply[2])))))


@dataclass
class _Reader:
    process: Any
    conn: Connection
    pending: deque[int] = field(default_factory=deque)
    """Ids of the tasks sent and not yet answered, in order (a reader answers in order)."""


class ReaderPool:
    """The reader processes of one export: they stage documents (pass 1), then fold merge groups (pass 3).

    With ``workers <= 1`` everything runs in this process. Each reader has its own pipe and the
    exporter's one thread sends tasks and receives results itself: ``multiprocessing.Pool``'s worker
    handler thread wakes up whenever its result pipe is readable and, until the result thread has read
    it, spins — about a second of CPU per 300k documents, taken from the readers, plus GIL contention
    with the writer.
    """

    _IN_FLIGHT = 2  # tasks queued per reader while reading, so it never waits for the next chunk
    SLOTS = 6  # shared-memory slots for folded windows: the windows folded ahead, and one being taken

    def __init__(self, cfg: StageConfig, workers: int) -> None:
        self.cfg = cfg
        self._readers: list[_Reader] = []
        self._done: dict[int, tuple[bool, Any]] = {}
        self._next_id = 0
        self._entries: _Entries | None = None
        self._shared: mmap.mmap | None = None
        self._free_slots: list[int] = []
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            fork = "fork" in methods
            ctx = multiprocessing.get_context("fork" if fork else None)
            if fork:  # anonymous shared memory, inherited by the readers (it cannot be pickled for spawn)
                self._shared = mmap.mmap(-1, self.SLOTS * SLOT_BYTES)
                self._free_slots = list(range(self.SLOTS))
            try:
                for _ in range(workers):
                    mine, theirs = ctx.Pipe()
                    process = ctx.Process(target=_reader_main, args=(theirs, cfg, self._shared), daemon=True)
                    process.start()
                    theirs.close()
                    self._readers.append(_Reader(process, mine))
            except BaseException:
                self.close()
                raise

    def _send(self, reader: _Reader, kind: str, args: tuple[Any, ...]) -> int:
        task_id = self._next_id
        self._next_id += 1
        try:
            reader.conn.send((task_id, kind, args))
        except OSError:  # its end of the pipe is closed: the process is gone
            reader.process.join(1)
            code = reader.process.exitcode
            raise RuntimeError(f"a reader process exited unexpectedly (exit code {code})") from None
        reader.pending.append(task_id)
        return task_id

    def _receive(self) -> None:
        """Wait until at least one reader has answered; file every answer that arrived under its task id."""
        busy = {r.conn: r for r in self._readers if r.pending}
        if not busy:
            raise RuntimeError("no reader task is pending")
        for conn in mp_connection.wait(list(busy)):
            reader = busy[cast(Connection, conn)]
            try:
                task_id, ok, value = reader.conn.recv()
            except EOFError:
                reader.process.join(1)
                raise RuntimeError(
                    f"a reader process exited unexpectedly (exit code {reader.process.exitcode})"
                ) from None
            if task_id != reader.pending[0]:
                raise RuntimeError(f"reader answered task {task_id}, expected {reader.pending[0]}")
            reader.pending.popleft()
            self._done[task_id] = (ok, value)

    def _result(self, task_id: int) -> Any:
        while task_id not in self._done:
            self._receive()
        ok, value = self._done.pop(task_id)
        if not ok:
            raise value
        return value

    def read(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        """Stage every chunk; results arrive in any order."""
        if self._readers:
            source = iter(chunks)
            exhausted = False
            while True:
                for reader in self._readers:
                    while not exhausted and len(reader.pending) < self._IN_FLIGHT:
                        chunk = next(source, None)
                        if chunk is None:
                            exhausted = True
                        else:
                            self._send(reader, "read", (chunk,))
                if not self._done and not any(r.pending for r in self._readers):
                    return
                if not self._done:
                    self._receive()
                for task_id in sorted(self._done):
                    yield cast(ChunkResult, self._result(task_id))
        stager = Stager(self.cfg, "main")
        try:
            for chunk in chunks:
                yield stager.read_chunk(chunk)
        finally:
            stager.close()

    def alias_pairs(self, buckets: list[list[tuple[int, str]]]) -> Iterator[array]:  # type: ignore[type-arg]
        """:func:`alias_pairs` of every bucket, spread over the readers; results in any order."""
        if not self._readers:
            for files in buckets:
                yield alias_pairs(files)
            return
        # A few tasks in flight per reader, so neither side can block the other on a full pipe.
        in_flight: deque[int] = deque()
        for files in buckets:
            reader = min(self._readers, key=lambda r: len(r.pending))
            if len(reader.pending) >= self._IN_FLIGHT:
                yield self._result(in_flight.popleft())
                reader = min(self._readers, key=lambda r: len(r.pending))
            in_flight.append(self._send(reader, "pairs", (files,)))
        while in_flight:
            yield self._result(in_flight.popleft())

    def fold(self, layout: Layout, keys: list[str], spec: array) -> Callable[[], list[DomainRun | None]]:  # type: ignore[type-arg]
        """Start :func:`fold_window` on a window (in a reader process); the returned function waits for it."""
        if not self._readers:
            if self._entries is None or self._entries.layout != layout:
                self._entries = _Entries(layout)
            runs = fold_window(self.cfg, self._entries, keys, spec)
            return lambda: runs
        reader = min(self._readers, key=lambda r: len(r.pending))
        slot = self._free_slots.pop() if self._free_slots else -1
        task_id = self._send(reader, "fold", (layout, keys, spec, slot))

        def wait() -> list[DomainRun | None]:
            try:
                runs: list[DomainRun | None] = self._result(task_id)
                spilled = [run for run in runs if run is not None and run.spilled is not None]
                if spilled and spilled[0].spilled[0] == "":  # type: ignore[index]
                    shared = self._shared
                    assert shared is not None
                    for run in spilled:
                        assert run.spilled is not None
                        _path, offset, size, lines = run.spilled
                        run.data = shared[offset : offset + size]
                        run.lines = shared[offset + size : offset + size + lines]
                        run.spilled = None
                    return runs
            finally:
                if slot >= 0:  # copied out (or never used): the next window may take it
                    self._free_slots.append(slot)
            if not spilled:
                return runs
            path = spilled[0].spilled[0]  # type: ignore[index]
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                for run in spilled:
                    assert run.spilled is not None and run.spilled[0] == path
                    _path, offset, size, lines = run.spilled
                    run.data = os.pread(fd, size, offset)
                    run.lines = os.pread(fd, lines, offset + size)
                    if len(run.data) != size or len(run.lines) != lines:
                        raise RuntimeError(f"{path}: short read of a folded run at offset {offset}")
                    run.spilled = None
            finally:
                os.close(fd)
            os.unlink(path)  # its pages go back to the kernel unwritten
            return runs

        return wait

    def close(self) -> None:
        """Stop the processes and close what this process opened."""
        for reader in self._readers:
            reader.process.terminate()
        for reader in self._readers:
            reader.process.join()
            reader.conn.close()
        self._readers = []
        if self._entries is not None:
            self._entries.close()
            self._entries = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading staged records back -----------------------------------------------------------------------


class StagedRecords:
    """The staged records of every reader, indexed densely: ``0 … len-1``.

    Per record only its entry offset stays in memory (8 bytes); entries are read with ``pread`` rather
    than through a memory map, whose pages would count as this process's resident memory.
    """

    def __init__(self, work: Path, counts: dict[str, int]) -> None:
        self.work = work
        self.tags = sorted(t for t, n in counts.items() if n)
        self.bases: list[int] = []  # first record index of each tag
        self._file_starts: list[int] = []  # virtual offset of each tag's file (files laid end to end)
        self._fds: list[int] = []
        self._paths: list[str] = []
        self.offsets = array("q")
        virtual = 0
        for tag in self.tags:
            self.bases.append(len(self.offsets))
            local = array("q")
            local.frombytes((work / f"off-{tag}.bin").read_bytes())
            if len(local) != counts[tag]:
                raise RuntimeError(
                    f"staging file off-{tag}.bin holds {len(local)} records, the reader reported {counts[tag]}"
                )
            self.offsets.extend(local if virtual == 0 else array("q", (o + virtual for o in local)))
            del local
            self._file_starts.append(virtual)
            self._paths.append(str(work / f"rec-{tag}.bin"))
            fd = os.open(self._paths[-1], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._fds.append(fd)
            virtual += os.fstat(fd).st_size
        self.offsets.append(virtual)  # sentinel: the end of the last entry
        offsets_path = work / "offsets.bin"
        with offsets_path.open("wb") as fh:
            self.offsets.tofile(fh)
        self.layout = Layout(str(offsets_path), tuple(self._paths), tuple(self._file_starts))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def entry(self, i: int) -> bytes:
        """The raw entry of record ``i``: meta line, ``\\n``, canonical record bytes."""
        start = self.offsets[i]
        f = bisect.bisect_right(self._file_starts, start) - 1
        return os.pread(self._fds[f], self.offsets[i + 1] - start, start - self._file_starts[f])

    def meta_and_blob(self, i: int) -> tuple[list[Any], bytes]:
        """``([blobDigest, mask, provenance pairs, priority], canonical bytes)`` of record ``i``."""
        return split_entry(self.entry(i))

    def record(self, i: int) -> tuple[int, Advisory]:
        """``(source priority, record)`` of record ``i``."""
        meta, blob = self.meta_and_blob(i)
        rec: Advisory = orjson.loads(blob)
        return meta[3], rec

    def key_lines(self) -> Iterator[list[str | None]]:
        """The staged key lines, in index order: ``[lowestCve, ownKey, lowestCve, ownKey, …]`` each."""
        for tag in self.tags:
            with (self.work / f"key-{tag}.jsonl").open("rb", buffering=1 << 20) as fh:
                for line in fh:
                    yield orjson.loads(line)

    def alias_files(self, bucket: int) -> Iterator[tuple[int, Path]]:
        """``(first record index, path)`` of each reader's file of one alias bucket."""
        for tag, base in zip(self.tags, self.bases, strict=True):
            path = self.work / f"alias-{tag}-{bucket}.jsonl"
            if path.exists():
                yield base, path

    def close(self) -> None:
        """Close the file descriptors."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []
