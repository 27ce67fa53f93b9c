"""Rebuild a payload from local copies plus fetched byte ranges, or decompress a fetched variant — and accept
the result only when its SHA-256 equals the signed digest.

Both functions take what to fetch from as a callable, so the HTTPS upstream, S3 and ``pull`` share them
(:mod:`stella_mirror.transfer.readers` makes those callables). The target is written through
:func:`~stella_mirror.bundle.files.open_atomic`: it appears complete and verified, or not at all.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from stella_mirror.bundle import chunks
from stella_mirror.bundle.files import open_atomic
from stella_mirror.errors import DigestError

RangeReader = Callable[[int, int], bytes]
"""Returns exactly the bytes ``[start, end)`` of the payload at its source, or raises."""

WORTH_IT = 0.5
"""A delta that would fetch more than this share of the payload is not attempted: a (compressed) full download
costs fewer requests for about the same bytes."""


@dataclass
class DeltaStats:
    """What a rebuild took: bytes fetched and reused, requests made."""

    fetched_bytes: int = 0
    reused_bytes: int = 0
    requests: int = 0


@contextlib.contextmanager
def mapped(paths: Sequence[Path]) -> Iterator[list[memoryview]]:
    """Memory-map the readable, non-empty files among ``paths`` (read-only); unmapped on exit."""
    maps: list[mmap.mmap] = []
    views: list[memoryview] = []
    try:
        for path in paths:
            try:
                with path.open("rb") as fh:
                    if fh.seek(0, 2) == 0:
                        continue
                    maps.append(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
            except OSError:
                continue
            views.append(memoryview(maps[-1]))
        yield views
    finally:
        for v in views:
            v.release()
        for m in maps:
            m.close()


def plan_from_copies(table: chunks.ChunkTable, copies: Sequence[memoryview]) -> chunks.Plan:
    """The plan for rebuilding ``table``'s payload from these local copies."""
    return chunks.plan(table, chunks.index_local(copies, table.params))


def rebuild(
    target: Path,
    digest: str,
    table: chunks.ChunkTable,
    copies: Sequence[memoryview],
    read_range: RangeReader,
    where: str,
) -> DeltaStats:
    """Write the payload ``table`` describes to ``target``: reused chunks copied from ``copies``, missing ranges
    fetched with ``read_range`` (each checked chunk by chunk before use). Raises :class:`DigestError` — and
    leaves ``target`` as it was — when a fetched chunk or the rebuilt payload does not match."""
    plan = plan_from_copies(table, copies)
    stats = DeltaStats(reused_bytes=plan.reuse_bytes)
    reused = {c.offset: loc for c, loc in plan.reuse}
    ranges = iter(plan.ranges)
    with open_atomic(target) as out:
        pos = 0
        while pos < table.size:
            loc = reused.get(pos)
            if loc is not None:
                out.write(bytes(copies[loc.source][loc.offset : loc.offset + loc.length]))
                pos += loc.length
                continue
            start, end = next(ranges)
            assert start == pos, "plan ranges follow the table"
            data = read_range(start, end)
            stats.requests += 1
            stats.fetched_bytes += len(data)
            if len(data) != end - start:
                raise DigestError(where, f"range {start}-{end - 1} returned {len(data)} bytes")
            chunks.check_range(table, start, data, where)
            out.write(data)
            pos = end
        if out.digest != digest:
            raise DigestError(where, f"rebuilt payload has digest {out.digest}, not the signed {digest}")
    return stats


def decompress_verified(source: Path, target: Path, size: int, digest: str, where: str) -> None:
    """Decompress a zstd variant (already checked against its own signed size and digest) into ``target``,
    stopping at the payload's signed ``size``; accept it only when the result has the signed ``digest``."""
    dctx = zstandard.ZstdDecompressor()
    with source.open("rb") as src, open_atomic(target) as out, dctx.stream_reader(src) as reader:
        while block := reader.read(1 << 20):
            if out.size + len(block) > size:
                raise DigestError(where, f"decompresses to more than the signed {size} bytes")
            out.write(block)
        if out.size != size or out.digest != digest:
            raise DigestError(where, f"decompressed to {out.size} bytes, {out.digest}; signed {size}, {digest}")
