"""Pass 1 of the Concelier export: documents → records staged on disk by the readers themselves.

Each reader — a pool process, or the exporting process itself for small inputs — reads chunks of
documents and appends everything it learns to its own files in the work directory (``<tag>`` is the
reader's process id), so records never travel through a pipe and the exporting process holds nothing
per record while they are read:

``rec-<tag>.bin``
    one entry per record: a meta line ``[blobDigest, domainMask, [[source, recordedAt], …], priority]``,
    ``\\n``, then the record's canonical bytes — exactly what the bundle carries when the record is an
    advisory of its own, so pass 3 can copy them unchanged;
``off-<tag>.bin``
    the start offset of each entry (native int64);
``key-<tag>.jsonl``
    ``[lowestCve|null, ownKey]`` per record, for choosing each merge group's advisory key;
``alias-<tag>-<b>.jsonl``
    lines ``[k, alias, k, alias, …]`` (``k`` = the record's index within this reader), one file per
    bucket ``b = crc32(alias) mod buckets``, so the union over aliases can be done one bucket at a
    time (:mod:`stella_mirror.concelier.grouping`).

A reader flushes all its files at the end of every chunk, so when the last chunk result arrives
every byte is on disk (in the page cache). :class:`StagedRecords` then gives records dense indices
(readers in tag order, records in file order) and reads entries back with ``pread``.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import multiprocessing
import os
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.model import Advisory, lowest_cve
from stella_mirror.concelier.sources import canonical_record, load_records

CHUNK_DOCUMENTS = 256  # documents per task: big enough that a task's overhead is noise, small enough to balance
_SORT = orjson.OPT_SORT_KEYS


@dataclass(frozen=True)
class StageConfig:
    """What every reader needs to know (sent once, when the pool starts)."""

    work: str
    buckets: int
    filters: tuple[DomainFilter, ...]
    """The domains' filters in domain-id order: bit ``i`` of a record's mask is domain ``i``."""
    kinds: dict[str, str]
    max_bytes: int


@dataclass(frozen=True)
class Chunk:
    """Documents of one source for one reader task."""

    source: str
    kind: str
    priority: int
    paths: list[str]


@dataclass
class ChunkResult:
    """What a reader reports for one chunk (all records are already on disk)."""

    tag: str
    read: int = 0
    skipped: int = 0
    records: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, pointer, message) of each rejected document."""


def bucket_count(documents: int) -> int:
    """Alias buckets for a corpus: about 64k aliases per bucket (4 per document assumed), a power of two ≤ 256."""
    want = documents * 4 // 65536 + 1
    buckets = 1
    while buckets < want and buckets < 256:
        buckets *= 2
    return buckets


class Stager:
    """One reader's staging files; turns documents into staged records."""

    def __init__(self, cfg: StageConfig, tag: str) -> None:
        self.cfg = cfg
        self.tag = tag
        work = Path(cfg.work)
        self._rec = (work / f"rec-{tag}.bin").open("ab", buffering=1 << 20)
        self._off = (work / f"off-{tag}.bin").open("ab")
        self._keys = (work / f"key-{tag}.jsonl").open("ab", buffering=1 << 16)
        self._alias_paths = [work / f"alias-{tag}-{b}.jsonl" for b in range(cfg.buckets)]
        self._alias_files: list[IO[bytes] | None] = [None] * cfg.buckets
        self._buckets: list[list[Any]] = [[] for _ in range(cfg.buckets)]
        self._offsets = array("q")
        self._pos = 0
        self.count = 0

    def add(self, record: Advisory, priority: int) -> None:
        """Stage one source record."""
        final = canonical_record(record)
        blob = orjson.dumps(final, option=_SORT)
        mask = 0
        for i, filt in enumerate(self.cfg.filters):
            if not filt.clauses or filt.matches(final, self.cfg.kinds):
                mask |= 1 << i
        prov = [[p["source"], p["recordedAt"]] for p in final["provenance"]]
        meta = orjson.dumps(["sha256:" + hashlib.sha256(blob).hexdigest(), mask, prov, priority])
        entry = meta + b"\n" + blob
        self._rec.write(entry)
        self._offsets.append(self._pos)
        self._pos += len(entry)
        own = final["advisoryKey"]
        aliases = final["aliases"]
        names = aliases if own in aliases else [*aliases, own]
        self._keys.write(orjson.dumps([lowest_cve(names), own]) + b"\n")
        k = self.count
        buckets = self._buckets
        mask_b = self.cfg.buckets - 1
        for alias in names:
            b = zlib.crc32(alias.encode("utf-8", "surrogatepass")) & mask_b
            buckets[b].append(k)
            buckets[b].append(alias)
        self.count += 1

    def read_chunk(self, chunk: Chunk) -> ChunkResult:
        """Read, map and stage every document of a chunk; flush the files."""
        result = ChunkResult(self.tag)
        before = self.count
        for path in chunk.paths:
            status, payload = load_records(path, chunk.kind, chunk.source, self.cfg.max_bytes)
            if status == "ok":
                result.read += 1
                for record in cast(list[Advisory], payload):
                    self.add(record, chunk.priority)
            elif status == "skipped":
                result.skipped += 1
            else:
                pointer, message = cast(tuple[str, str], payload)
                result.rejected.append((path, pointer, message))
        result.records = self.count - before
        self.flush()
        return result

    def flush(self) -> None:
        """Push everything staged so far to the files."""
        self._rec.flush()
        self._offsets.tofile(self._off)
        self._off.flush()
        del self._offsets[:]
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


def read_chunks(cfg: StageConfig, chunks: Iterator[Chunk], workers: int) -> Iterator[ChunkResult]:
    """Stage every chunk, in ``workers`` processes (or in this process when ``workers <= 1``)."""
    if workers <= 1:
        stager = Stager(cfg, "main")
        try:
            for chunk in chunks:
                yield stager.read_chunk(chunk)
        finally:
            stager.close()
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from pool.imap_unordered(_read_chunk_in_worker, chunks)


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
            fd = os.open(work / f"rec-{tag}.bin", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._fds.append(fd)
            virtual += os.fstat(fd).st_size
        self.offsets.append(virtual)  # sentinel: the end of the last entry

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def entry(self, i: int) -> bytes:
        """The raw entry of record ``i``: meta line, ``\\n``, canonical record bytes."""
        start = self.offsets[i]
        f = bisect.bisect_right(self._file_starts, start) - 1
        return os.pread(self._fds[f], self.offsets[i + 1] - start, start - self._file_starts[f])

    def meta_and_blob(self, i: int) -> tuple[list[Any], bytes]:
        """``([blobDigest, mask, provenance pairs, priority], canonical bytes)`` of record ``i``."""
        entry = self.entry(i)
        nl = entry.index(b"\n")
        return orjson.loads(entry[:nl]), entry[nl + 1 :]

    def record(self, i: int) -> tuple[int, Advisory]:
        """``(source priority, record)`` of record ``i``."""
        meta, blob = self.meta_and_blob(i)
        rec: Advisory = orjson.loads(blob)
        return meta[3], rec

    def key_lines(self) -> Iterator[bytes]:
        """The ``[lowestCve, ownKey]`` lines of every record, in index order."""
        for tag in self.tags:
            with (self.work / f"key-{tag}.jsonl").open("rb", buffering=1 << 20) as fh:
                yield from fh

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
