"""Chunk tables: build, wire form round trip, validation, plans from local copies, range checks."""

from __future__ import annotations

import hashlib
import random

import pytest

from stella_mirror.bundle import chunks
from stella_mirror.errors import DigestError, MalformedBundleError


def _records(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [
        b'{"advisoryKey":"K-%06d","summary":"%s"}'
        % (i, bytes(rnd.choices(b"abcdefghij klmnop", k=rnd.randint(200, 900))))
        for i in range(n)
    ]


def _payload(records: list[bytes]) -> bytes:
    return b'{"advisories":[' + b",".join(records) + b"]}"


def test_wire_form_round_trips_and_covers_the_payload() -> None:
    data = _payload(_records(2000))
    table = chunks.build(data)
    decoded = chunks.decode(chunks.encode(table), len(data), "t")
    assert decoded == table
    assert sum(c.length for c in table.chunks) == len(data)
    assert all(chunks.DEFAULT.min_size <= c.length <= chunks.DEFAULT.max_size for c in table.chunks[:-1])
    first = table.chunks[0]
    assert first.digest == hashlib.sha256(data[: first.length]).digest()[: chunks.DEFAULT.hash_bytes]


def test_a_few_edits_leave_most_chunks_reusable() -> None:
    old = _records(3000)
    new = list(old)
    new[100] = new[100].replace(b"a", b"A")  # edit
    new[2000] = new[2000] + b" "  # edit that changes the length
    del new[1500]  # remove
    new.insert(700, b'{"advisoryKey":"K-000699x","summary":"added"}')  # add
    old_data, new_data = _payload(old), _payload(new)
    table = chunks.build(new_data)
    p = chunks.plan(table, chunks.index_local([old_data], table.params))
    assert p.reuse_bytes + p.fetch_bytes == len(new_data)
    assert p.fetch_bytes < 0.03 * len(new_data), (p.fetch_bytes, len(new_data))
    assert 1 <= len(p.ranges) <= 8
    # Ranges are coalesced (none touches the next) and each one checks against the table.
    assert all(a[1] < b[0] for a, b in zip(p.ranges, p.ranges[1:], strict=False))
    for start, end in p.ranges:
        chunks.check_range(table, start, new_data[start:end], "t")


def test_any_earlier_copy_helps_and_no_copy_means_everything() -> None:
    base = _records(1500)
    n2 = _payload(base)
    n1 = _payload([*base[:500], b'{"advisoryKey":"X","summary":"x"}', *base[500:]])
    new = _payload([*base[:1000], *base[1001:]])
    table = chunks.build(new)
    from_both = chunks.plan(table, chunks.index_local([n2, n1], table.params))
    nothing = chunks.plan(table, {})
    assert from_both.fetch_bytes < 0.05 * len(new)
    assert nothing.fetch_bytes == len(new) and nothing.ranges == ((0, len(new)),)


def test_a_corrupt_chunk_is_refused() -> None:
    data = _payload(_records(1000))
    table = chunks.build(data)
    c = table.chunks[3]
    bad = bytearray(data[c.offset : c.offset + c.length])
    bad[10] ^= 1
    with pytest.raises(DigestError, match=f"offset {c.offset}"):
        chunks.check_range(table, c.offset, bytes(bad), "t")
    with pytest.raises(MalformedBundleError, match="not a chunk boundary"):
        chunks.check_range(table, c.offset + 1, data[c.offset + 1 : c.offset + c.length], "t")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "rabin"}, "algorithm"),
        ({"minSize": 1}, "minSize"),
        ({"count": 10**9}, "count"),
        ({"table": "not base64!"}, "does not decode"),
        ({"hashBytes": 2}, "hashBytes"),
    ],
)
def test_malformed_tables_are_refused(change: dict[str, object], message: str) -> None:
    data = _payload(_records(800))
    wire = {**chunks.encode(chunks.build(data)), **change}
    with pytest.raises(MalformedBundleError, match=message):
        chunks.decode(wire, len(data), "t")


def test_a_table_for_another_size_is_refused() -> None:
    data = _payload(_records(800))
    wire = chunks.encode(chunks.build(data))
    with pytest.raises(MalformedBundleError, match="add up to"):
        chunks.decode(wire, len(data) + 1, "t")
    wire["count"] -= 1
    with pytest.raises(MalformedBundleError, match="entries"):
        chunks.decode(wire, len(data), "t")
