"""Pass 1 of the Concelier export: documents → records staged on disk by the readers themselves.

Each reader — a reader process (:mod:`.readers`), or the exporting process itself for small inputs —
reads chunks of documents and appends everything it learns to its own files in the work directory
(``<tag>`` is the reader's process id), so records never travel through a pipe and the exporting
process holds nothing per record while they are read:

``rec-<tag>.bin``
    one entry per record: a meta line ``[blobDigest, domainMask, [[source, recordedAt], …], priority]``,
    the record's state-file line ``[ownKey, blobDigest]`` and then its canonical bytes — exactly what
    the bundle and the state file carry when the record is an advisory of its own, so pass 3 can copy
    both unchanged;
``off-<tag>.bin``
    the start offset of each entry (native int64);
``key-<tag>.jsonl``
    one line per chunk: ``[lowestCve|null, ownKey, lowestCve|null, ownKey, …]``, a pair per record in
    file order, for choosing each merge group's advisory key;
``alias-<tag>-<b>.jsonl``
    lines ``[k, alias, k, alias, …]`` (``k`` = the record's index within this reader), one file per
    bucket ``b = crc32(alias) mod buckets``, so the union over aliases can be done one bucket at a
    time (:mod:`stella_mirror.concelier.grouping`).

A reader flushes all its files at the end of every chunk, so when the last chunk result arrives
every byte is on disk (in the page cache). :class:`StagedRecords` then gives records dense indices
(readers in tag order, records in file order) and writes their offsets to ``offsets.bin``;
:class:`StagedEntries` reads entries back in any process.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import compress
from operator import ne
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.model import Advisory, lowest_cve
from stella_mirror.concelier.sources import canonical_record, load_records
from stella_mirror.formats.reader import Read, Skipped

CHUNK_DOCUMENTS = 256  # documents per task: big enough that a task's overhead is noise, small enough to balance
_SORT = orjson.OPT_SORT_KEYS
_INT64 = struct.Struct("=q")  # the offset files: native int64, as array("q") reads them


@dataclass(frozen=True)
class StageConfig:
    """What every reader needs to know (sent once, when the reader processes start)."""

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
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of each skipped file."""
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


class Stager:
    """One reader's staging files; turns documents into staged records."""

    def __init__(self, cfg: StageConfig, tag: str) -> None:
        self.cfg = cfg
        self.tag = tag
        work = Path(cfg.work)
        # Entries go straight into the files' buffers: a chunk's worth of bytes grown and freed per chunk
        # would be mapped and unmapped by malloc each time, every page a page fault.
        self._rec = (work / f"rec-{tag}.bin").open("ab", buffering=1 << 20)
        self._off = (work / f"off-{tag}.bin").open("ab")
        self._keys = (work / f"key-{tag}.jsonl").open("ab")
        self._alias_paths = [work / f"alias-{tag}-{b}.jsonl" for b in range(cfg.buckets)]
        self._alias_files: list[IO[bytes] | None] = [None] * cfg.buckets
        # A chunk's entry offsets, its key candidates ``[lowestCve, ownKey, …]`` and its alias pairs per
        # bucket ``[k, alias, …]``: flush() writes them out, each list as one JSON line.
        self._offbuf = bytearray()
        self._key_items: list[str | None] = []
        self._buckets: list[list[int | str]] = [[] for _ in range(cfg.buckets)]
        self._pos = 0
        self.count = 0

    def add(self, record: Advisory, priority: int) -> None:
        """Stage one source record."""
        final = canonical_record(record)
        staged = stage_entry(self.cfg, final, priority)
        self._rec.write(staged.head)
        self._rec.write(staged.blob)
        self._offbuf += _INT64.pack(self._pos)
        self._pos += len(staged.head) + len(staged.blob)
        own = final["advisoryKey"]
        names = final["aliases"]
        if own not in names:
            names = [*names, own]
        self._key_items += (lowest_cve(names), own)
        k = self.count
        buckets = self._buckets
        last = self.cfg.buckets - 1
        for alias in names:
            buckets[zlib.crc32(alias.encode("utf-8", "surrogatepass")) & last] += (k, alias)
        self.count += 1

    def read_chunk(self, chunk: Chunk) -> ChunkResult:
        """Read, map and stage every document of a chunk; flush the files."""
        result = ChunkResult(self.tag)
        before = self.count
        for path in chunk.paths:
            outcome = load_records(path, chunk.kind, chunk.source, self.cfg.max_bytes)
            if isinstance(outcome, Read):
                result.read += 1
                for record in outcome.result.items:
                    self.add(record, chunk.priority)
            elif isinstance(outcome, Skipped):
                result.skipped.append((path, outcome.reason))
            else:
                result.rejected.append((path, outcome.pointer, outcome.message))
        result.records = self.count - before
        self.flush()
        return result

    def flush(self) -> None:
        """Push everything staged so far to the files."""
        self._rec.flush()
        self._off.write(self._offbuf)  # a buffered writer writes all of it (or raises)
        self._off.flush()
        self._offbuf.clear()
        if self._key_items:
            self._keys.write(orjson.dumps(self._key_items) + b"\n")
            self._keys.flush()
            self._key_items.clear()
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


# --- reading staged records back -----------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where staged entries are: record ``i`` spans ``offsets[i]`` to ``offsets[i+1]`` of the staging files
    laid end to end (file ``f`` starts at ``starts[f]``). Small enough to send to the reader processes."""

    offsets: str
    """File of the int64 offsets."""
    paths: tuple[str, ...]
    starts: tuple[int, ...]


class StagedEntries:
    """Staged entries from a :class:`Layout`, through read-only memory maps (offsets loaded once per process).

    A fold reads ~1,000 entries scattered over the staging files: slicing a map costs a fraction of a
    ``pread`` system call each. Mapped pages count as this process's resident memory while they are
    mapped in, so :meth:`release` drops them from the mapping (the page cache keeps them): resident
    memory stays bounded by what was read since, not by the corpus.
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

    def _locate(self, i: int) -> tuple[int, int, int]:
        """``(file, start, end)`` of entry ``i`` within its staging file."""
        start, end = self.offsets[i], self.offsets[i + 1]
        starts = self.layout.starts
        f = bisect.bisect_right(starts, start) - 1 if len(starts) > 1 else 0
        return f, start - starts[f], end - starts[f]

    def parts(self, i: int) -> tuple[memoryview, memoryview, memoryview]:
        """Entry ``i``'s meta line, its state line (with the newline) and its canonical bytes, as views into
        the map: nothing is copied until a run is joined."""
        f, start, end = self._locate(i)
        m, view = self.maps[f], self.views[f]
        nl = m.find(b"\n", start, end)
        nl2 = m.find(b"\n", nl + 1, end)
        return view[start:nl], view[nl + 1 : nl2 + 1], view[nl2 + 1 : end]

    def meta_and_blob(self, i: int) -> tuple[list[Any], bytes]:
        """``([blobDigest, mask, provenance pairs, priority], canonical bytes)`` of entry ``i``."""
        meta, _state, blob = self.parts(i)
        return orjson.loads(meta), bytes(blob)

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


class StagedRecords:
    """The staged records of every reader, indexed densely: ``0 … len-1``.

    Per record only its entry offset stays in memory (8 bytes).
    """

    def __init__(self, work: Path, counts: dict[str, int]) -> None:
        self.work = work
        self.tags = sorted(t for t, n in counts.items() if n)
        self.bases: list[int] = []  # first record index of each tag
        offsets = array("q")
        starts: list[int] = []
        paths: list[str] = []
        virtual = 0  # the staging files laid end to end
        for tag in self.tags:
            self.bases.append(len(offsets))
            local = array("q")
            local.frombytes((work / f"off-{tag}.bin").read_bytes())
            if len(local) != counts[tag]:
                raise RuntimeError(
                    f"staging file off-{tag}.bin holds {len(local)} records, the reader reported {counts[tag]}"
                )
            offsets.extend(local if virtual == 0 else array("q", (o + virtual for o in local)))
            del local
            starts.append(virtual)
            paths.append(str(work / f"rec-{tag}.bin"))
            virtual += os.stat(paths[-1]).st_size
        offsets.append(virtual)  # sentinel: the end of the last entry
        self.count = len(offsets) - 1
        offsets_path = work / "offsets.bin"
        with offsets_path.open("wb") as fh:
            offsets.tofile(fh)
        self.layout = Layout(str(offsets_path), tuple(paths), tuple(starts))

    def __len__(self) -> int:
        return self.count

    def key_lines(self) -> Iterator[list[str | None]]:
        """The staged key lines, in index order: ``[lowestCve, ownKey, lowestCve, ownKey, …]`` each."""
        for tag in self.tags:
            with (self.work / f"key-{tag}.jsonl").open("rb", buffering=1 << 20) as fh:
                for line in fh:
                    yield orjson.loads(line)

    def alias_files(self, bucket: int) -> list[tuple[int, str]]:
        """``(first record index, path)`` of each reader's file of one alias bucket."""
        files = []
        for tag, base in zip(self.tags, self.bases, strict=True):
            path = self.work / f"alias-{tag}-{bucket}.jsonl"
            if path.exists():
                files.append((base, str(path)))
        return files
