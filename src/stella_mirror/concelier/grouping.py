"""Pass 2 of the Concelier export: merge groups, their keys and their order, in constant memory.

Records live on disk (:mod:`stella_mirror.concelier.staging`); what stays in memory per record is a
few integers in arrays — no strings, no Python objects:

1. *Union*: records that share an alias string form one group. Readers staged ``(record, alias)``
   pairs in buckets by a hash of the alias; each bucket is loaded alone (about 64k aliases), every
   alias is mapped to one record naming it, and records naming the same alias are joined in a
   union-find over record indices (``parent``: 4 bytes, ``rank``: 1 byte per record). Exact: the
   alias strings themselves are compared, hashes only choose the bucket.
2. *Chains*: each record is linked to the next record of its group (``head``/``next``: 4 + 4 bytes).
3. *Keys*: a group's key is its lowest CVE (by year, then number), else the own key of its first
   record in merge order. One streaming pass over the staged key lines; only groups of several
   records remember their best CVE until the pass ends.
4. *Order*: ``(key, record, fast)`` triples are sorted by key with an external merge sort (sorted
   runs of 64k triples on disk), so sorting needs constant memory too.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson

from stella_mirror.concelier.fold import Group
from stella_mirror.concelier.merge import better_cve
from stella_mirror.concelier.readers import ReaderPool
from stella_mirror.concelier.sources import order_key
from stella_mirror.concelier.staging import StagedEntries, StagedRecords, alias_pairs

SORT_RUN = 1 << 16  # triples per sorted run (about 10 MiB of Python objects while a run is sorted)
_BLOCK = 1024  # triples per line of a run file


class RecordUnion:
    """Union-find over record indices ``0 … n-1`` in arrays (path halving, union by rank)."""

    def __init__(self, n: int) -> None:
        self.parent = array("i", range(n))
        self.rank = array("B", bytes(n))

    def find(self, i: int) -> int:
        """The representative of ``i``'s group."""
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Join the groups of ``a`` and ``b``."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        rank = self.rank
        if rank[ra] < rank[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rank[ra] == rank[rb]:
            rank[ra] += 1

    def union_pairs(self, pairs: array) -> None:  # type: ignore[type-arg]
        """:meth:`union` for every pair ``a, g`` of a flat array."""
        for i in range(0, len(pairs), 2):
            self.union(pairs[i], pairs[i + 1])


def union_aliases(staged: StagedRecords, buckets: int, uf: RecordUnion, pool: ReaderPool | None = None) -> None:
    """Join every two records that name the same alias, one alias bucket at a time.

    With ``pool`` the buckets are read by the reader processes, in parallel (:func:`staging.alias_pairs`);
    only the pairs to join come back.
    """
    files = [staged.alias_files(b) for b in range(buckets)]
    results = pool.alias_pairs(files) if pool is not None else map(alias_pairs, files)
    for pairs in results:
        uf.union_pairs(pairs)


class ExternalSort:
    """Sort ``(key, int, int)`` triples by key in bounded memory: sorted runs on disk, merged on reading.

    Equal keys are ordered by the integers; the caller decides whether they are allowed.
    """

    def __init__(self, work: Path, run_size: int | None = None) -> None:
        self._work = work
        self._run_size = run_size or SORT_RUN
        self._items: list[tuple[str, int, int]] = []
        self._runs: list[Path] = []
        self.count = 0

    def add(self, key: str, a: int, b: int) -> None:
        """Add one triple."""
        self._items.append((key, a, b))
        self.count += 1
        if len(self._items) >= self._run_size:
            self._spill()

    def extend(self, triples: list[tuple[str, int, int]]) -> None:
        """Add triples in bulk (the list is taken over: the caller must not use it again)."""
        self.count += len(triples)
        items = self._items
        items += triples
        while len(items) >= self._run_size:
            rest = items[self._run_size :]
            del items[self._run_size :]
            self._spill()  # sorts and writes self._items (items), then starts a new list
            self._items = items = rest

    def _spill(self) -> None:
        items = self._items
        items.sort()
        path = self._work / f"sort-{len(self._runs)}.jsonl"
        with path.open("wb", buffering=1 << 20) as fh:
            for i in range(0, len(items), _BLOCK):
                fh.write(orjson.dumps(items[i : i + _BLOCK]) + b"\n")
        self._runs.append(path)
        self._items = []

    def __iter__(self) -> Iterator[Any]:
        """The triples in order (tuples or, from runs on disk, lists — both unpack the same)."""
        for block in self.blocks():
            yield from block

    def blocks(self) -> Iterator[list[Any]]:
        """The triples in order, in lists of consecutive triples (of no set size).

        Runs on disk are merged a block at a time rather than a triple at a time: of every run's
        current line, everything up to the smallest of their last triples comes next (every triple
        still to come in any run is larger), so those are cut off, sorted together — timsort merges
        the sorted pieces in C — and handed out as one list.
        """
        if not self._runs:
            self._items.sort()
            items = self._items
            for i in range(0, len(items), _BLOCK):
                yield items[i : i + _BLOCK]
            return
        if self._items:
            self._spill()
        runs = [self._read_blocks(p) for p in self._runs]
        current = [next(run, []) for run in runs]
        while True:
            live = [i for i, block in enumerate(current) if block]
            if not live:
                return
            bound = min(current[i][-1] for i in live)
            out: list[Any] = []
            for i in live:
                block = current[i]
                cut = bisect.bisect_right(block, bound)
                out += block[:cut]
                current[i] = block[cut:] or next(runs[i], [])
            out.sort()
            yield out

    @staticmethod
    def _read_blocks(path: Path) -> Iterator[list[Any]]:
        with path.open("rb", buffering=1 << 20) as fh:
            for line in fh:
                yield orjson.loads(line)


class Groups:
    """Merge groups in key order: ``(key, record, fast)`` per group.

    ``fast`` means the group is one record whose own key is the group key, so its staged canonical
    bytes are the advisory as published; otherwise :meth:`members` lists the group's records.
    """

    def __init__(self, order: ExternalSort, head: array, nxt: array, merged: int) -> None:  # type: ignore[type-arg]
        self._order = order
        self._head = head
        self._next = nxt
        self.merged = merged
        """Groups of more than one record."""

    def __len__(self) -> int:
        return self._order.count

    def windows(self, size: int) -> Iterator[tuple[list[str], list[Group]]]:
        """The groups in order, ``size`` at a time, as :func:`.fold.fold_window` takes them: their keys, and
        each group as its record when it is final as staged, else as the list of its records."""
        keys: list[str] = []
        groups: list[Group] = []
        for key, record, fast in self._order:
            keys.append(key)
            groups.append(record if fast else self.members(record))
            if len(keys) == size:
                yield keys, groups
                keys, groups = [], []
        if keys:
            yield keys, groups

    def members(self, record: int) -> list[int]:
        """Every record of the group that ``record`` (as given by iteration) stands for."""
        out = []
        g = self._head[record]
        while g != -1:
            out.append(g)
            g = self._next[g]
        return out


def _key_pass(
    items: list[Any],
    base: int,
    parent: array,  # type: ignore[type-arg]
    head: array,  # type: ignore[type-arg]
    nxt: array,  # type: ignore[type-arg]
    singles: list[tuple[str, int, int]],
    multi: dict[int, str | None],
    better: Callable[[str | None, str], str],
) -> None:
    """The key pass over one key line ``[lowestCve, ownKey, …]`` of records ``base, base + 1, …``:
    a record alone in its group goes to ``singles`` as ``(key, record, key == ownKey)``; a group of
    several keeps its best CVE in ``multi[representative]``."""
    for g, (cve, own) in enumerate(zip(items[0::2], items[1::2], strict=True), base):
        r = parent[g]
        if nxt[g] == -1 and head[r] == g:  # a group of one record
            key = cve or own
            singles.append((key, g, key == own))
        elif cve is not None:
            multi[r] = better(multi.get(r), cve)
        elif r not in multi:
            multi[r] = None


def group(
    staged: StagedRecords,
    buckets: int,
    lap: Callable[[str], None] = lambda _phase: None,
    pool: ReaderPool | None = None,
) -> Groups:
    """Form the merge groups of all staged records and sort them by advisory key (``lap`` times the steps).

    ``pool``: reader processes to read the alias buckets in parallel.
    """
    n = len(staged)
    uf = RecordUnion(n)
    union_aliases(staged, buckets, uf, pool)
    lap("union")
    head = array("i", [-1]) * n
    nxt = array("i", [-1]) * n
    parent = uf.parent
    find = uf.find
    for g in range(n):
        r = find(g)
        parent[g] = r  # fully compressed from here on: parent is the group's representative
        nxt[g] = head[r]
        head[r] = g
    del uf.rank
    lap("chains")
    order = ExternalSort(staged.work)
    multi: dict[int, str | None] = {}
    singles: list[tuple[str, int, int]] = []  # handed to the sort in blocks (a call per record costs more)
    base = 0
    for items in staged.key_lines():
        _key_pass(items, base, parent, head, nxt, singles, multi, better_cve)
        base += len(items) // 2
        if len(singles) >= _BLOCK * 16:
            order.extend(singles)
            singles = []
    order.extend(singles)
    del parent, uf
    groups = Groups(order, head, nxt, len(multi))
    no_cve = [r for r, best in multi.items() if best is None]
    if no_cve:  # no CVE anywhere in the group: the own key of its first record in merge order (rare)
        entries = StagedEntries(staged.layout)
        try:
            for r in no_cve:
                records = [entries.meta_and_blob(g) for g in groups.members(r)]
                multi[r] = min(order_key(meta[3], orjson.loads(blob)) for meta, blob in records)[3]
        finally:
            entries.close()
    for r, best in multi.items():
        order.add(cast(str, best), r, 0)
    lap("keys + sort runs")
    return groups
