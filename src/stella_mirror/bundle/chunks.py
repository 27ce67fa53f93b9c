"""Chunk tables for delta transfer (issue 20): pure — bytes in, tables and fetch plans out.

A large payload carries, in signed metadata (a Concelier domain's manifest, an Excititor index entry), a
*chunk table*: the payload cut by content-defined chunking (FastCDC, the maintained ``fastcdc`` library —
no rolling hash of our own) with fixed parameters recorded in the table, and per chunk its length and the
first bytes of its SHA-256. A client that holds any earlier copies of the payload cuts them the same way,
reuses every chunk whose hash it already has, and fetches only the missing byte ranges from the payload's
own URL (HTTP ``Range`` or S3 ``GetObject Range``): see :mod:`stella_mirror.transfer.delta` for the I/O.

Why truncated hashes are enough: the table only says *where to find* bytes. The rebuilt payload is accepted
only when its full SHA-256 equals the signed digest, so a chunk matched by a colliding prefix yields a
payload that is refused (and the client falls back to a full download), never a wrong one accepted.

Wire form (a JSON object)::

    {"algorithm": "fastcdc-2016", "minSize": 1024, "avgSize": 2048, "maxSize": 8192,
     "hashBytes": 6, "count": N, "table": base64(zstd(N × (u32 big-endian length ‖ SHA-256[:hashBytes])))}

Content-defined boundaries depend only on nearby bytes, so editing, adding or removing a record in a
canonical bundle moves the boundaries of the one or two chunks around it; every other chunk keeps its
bytes and hash even though its offset shifted.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import zstandard
from fastcdc import fastcdc
from typing_extensions import Buffer

from stella_mirror.errors import DigestError, MalformedBundleError

ALGORITHM = "fastcdc-2016"
"""FastCDC as published in 2016 (Xia et al.) and implemented by the ``fastcdc`` package."""


@dataclass(frozen=True)
class Params:
    """The chunking parameters, recorded in every table (a client cuts its copies with the table's own)."""

    min_size: int = 1024
    avg_size: int = 2048
    max_size: int = 8192
    hash_bytes: int = 6


DEFAULT = Params()
"""Measured on the OSV corpus (bench/update.py; docs/benchmarks.md): with 8 KiB chunks (32 KiB max) low-entropy
stretches of a bundle (long version lists) run to the maximum size, and one edited record cost up to 50 KB of
ranges; 2 KiB chunks (8 KiB max) bring a few edited records to tens of KB while the table stays about 0.6 % of
the payload (10 bytes per chunk before compression). 6 hash bytes: a false match among ~10⁴ × 10⁴ chunks has a
probability near 10⁻⁷, and costs only a fallback (see above)."""

MIN_PAYLOAD = 256 << 10
"""Payloads smaller than this get no table: fetching them whole costs about as much as the table would."""

_ENTRY = struct.Struct(">I")


class Chunk(NamedTuple):
    """One chunk of a payload: where it starts, how long it is, and its (truncated) SHA-256."""

    offset: int
    length: int
    digest: bytes


@dataclass(frozen=True)
class ChunkTable:
    """A decoded chunk table for a payload of ``size`` bytes; chunks are contiguous from offset 0."""

    params: Params
    size: int
    chunks: tuple[Chunk, ...]

    def offsets(self) -> list[int]:
        return [c.offset for c in self.chunks]


def cut(data: Buffer, params: Params = DEFAULT) -> Iterator[Chunk]:
    """Cut ``data`` into content-defined chunks and hash each one."""
    view = memoryview(data).cast("B")
    if not len(view):
        return
    for c in fastcdc(view, min_size=params.min_size, avg_size=params.avg_size, max_size=params.max_size):
        piece = view[c.offset : c.offset + c.length]
        yield Chunk(c.offset, c.length, hashlib.sha256(piece).digest()[: params.hash_bytes])


def build(data: Buffer, params: Params = DEFAULT) -> ChunkTable:
    """The chunk table of a payload."""
    return ChunkTable(params, len(memoryview(data)), tuple(cut(data, params)))


def encode(table: ChunkTable) -> dict[str, Any]:
    """The table's wire form (see the module docstring)."""
    raw = b"".join(_ENTRY.pack(c.length) + c.digest for c in table.chunks)
    p = table.params
    return {
        "algorithm": ALGORITHM,
        "minSize": p.min_size,
        "avgSize": p.avg_size,
        "maxSize": p.max_size,
        "hashBytes": p.hash_bytes,
        "count": len(table.chunks),
        "table": base64.b64encode(zstandard.ZstdCompressor(level=19).compress(raw)).decode("ascii"),
    }


def _int(obj: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise MalformedBundleError(where, f"chunk table field {key!r} must be an integer in [{lo}, {hi}]")
    return value


def decode(obj: Any, size: int, where: str) -> ChunkTable:
    """Parse and check a chunk table for a payload of ``size`` signed bytes.

    Bounded work whatever the input: the number of chunks is capped by ``size / minSize``, the decompressed
    table by that count, and the lengths must add up to ``size`` exactly.
    """
    if not isinstance(obj, dict):
        raise MalformedBundleError(where, "chunk table must be an object")
    if obj.get("algorithm") != ALGORITHM:
        raise MalformedBundleError(where, f"chunk table algorithm must be {ALGORITHM!r}")
    # fastcdc's own bounds (fastcdc.const), so a table never makes the client's chunker fail an assertion.
    min_size = _int(obj, "minSize", 64, 1 << 26, where)
    avg_size = _int(obj, "avgSize", max(256, min_size), 1 << 28, where)
    max_size = _int(obj, "maxSize", max(1024, avg_size), 1 << 30, where)
    hash_bytes = _int(obj, "hashBytes", 4, 32, where)
    count = _int(obj, "count", 0, size // min_size + 1, where)
    text = obj.get("table")
    if not isinstance(text, str):
        raise MalformedBundleError(where, "chunk table field 'table' must be a base64 string")
    entry = _ENTRY.size + hash_bytes
    try:
        packed = base64.b64decode(text, validate=True)
        raw = zstandard.ZstdDecompressor().decompress(packed, max_output_size=count * entry)
    except (binascii.Error, zstandard.ZstdError) as exc:
        raise MalformedBundleError(where, f"chunk table does not decode: {exc}") from None
    if len(raw) != count * entry:
        raise MalformedBundleError(where, f"chunk table holds {len(raw)} bytes, not {count} entries")
    chunks: list[Chunk] = []
    offset = 0
    for i in range(count):
        (length,) = _ENTRY.unpack_from(raw, i * entry)
        if not 1 <= length <= max_size:
            raise MalformedBundleError(where, f"chunk {i} has length {length} outside [1, {max_size}]")
        start = i * entry + _ENTRY.size
        chunks.append(Chunk(offset, length, raw[start : start + hash_bytes]))
        offset += length
    if offset != size:
        raise MalformedBundleError(where, f"chunk lengths add up to {offset}, not the signed size {size}")
    return ChunkTable(Params(min_size, avg_size, max_size, hash_bytes), size, tuple(chunks))


class Location(NamedTuple):
    """Where a chunk's bytes are in a local copy: which copy (by position), offset, length."""

    source: int
    offset: int
    length: int


def index_local(copies: Sequence[Buffer], params: Params) -> dict[bytes, Location]:
    """Cut every local copy with the table's parameters; map each chunk hash to the first place it occurs."""
    found: dict[bytes, Location] = {}
    for i, data in enumerate(copies):
        for c in cut(data, params):
            found.setdefault(c.digest, Location(i, c.offset, c.length))
    return found


@dataclass(frozen=True)
class Plan:
    """How to rebuild a payload: chunks to copy from local copies, byte ranges (``[start, end)``) to fetch."""

    reuse: tuple[tuple[Chunk, Location], ...]
    ranges: tuple[tuple[int, int], ...]

    @property
    def fetch_bytes(self) -> int:
        return sum(end - start for start, end in self.ranges)

    @property
    def reuse_bytes(self) -> int:
        return sum(c.length for c, _ in self.reuse)


def plan(table: ChunkTable, local: dict[bytes, Location]) -> Plan:
    """Which chunks come from local copies and which byte ranges must be fetched (adjacent ones coalesced:
    one request per run of missing chunks)."""
    reuse: list[tuple[Chunk, Location]] = []
    ranges: list[tuple[int, int]] = []
    for c in table.chunks:
        loc = local.get(c.digest)
        if loc is not None and loc.length == c.length:
            reuse.append((c, loc))
        elif ranges and ranges[-1][1] == c.offset:
            ranges[-1] = (ranges[-1][0], c.offset + c.length)
        else:
            ranges.append((c.offset, c.offset + c.length))
    return Plan(tuple(reuse), tuple(ranges))


def check_range(table: ChunkTable, start: int, data: Buffer, where: str) -> None:
    """Check fetched bytes ``[start, start + len(data))`` chunk by chunk against the table; a corrupt chunk is
    refused here, before anything is assembled. The range must cover whole chunks."""
    view = memoryview(data).cast("B")
    offsets = table.offsets()
    i = bisect.bisect_left(offsets, start)
    if i == len(offsets) or offsets[i] != start:
        raise MalformedBundleError(where, f"range start {start} is not a chunk boundary")
    pos = 0
    for c in table.chunks[i:]:
        if pos == len(view):
            return
        piece = view[pos : pos + c.length]
        if len(piece) != c.length or hashlib.sha256(piece).digest()[: table.params.hash_bytes] != c.digest:
            raise DigestError(where, f"chunk at offset {c.offset} ({c.length} bytes) does not match the chunk table")
        pos += c.length
    if pos != len(view):
        raise MalformedBundleError(where, "range runs past the end of the payload")
