"""Canonical JSON: streaming output is byte-identical to whole-object output."""

from __future__ import annotations

import io

import pytest

from stella_mirror.bundle import canonical


def test_dumps_sorts_keys_and_ends_with_newline() -> None:
    assert canonical.dumps({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}\n'.encode()


@pytest.mark.parametrize("n", [0, 1, 3, 50])
def test_streaming_writer_matches_dumps(n: int) -> None:
    items = [{"z": i, "a": [i, {"y": "x" * i}]} for i in range(n)]
    early = {"advisor": "x", "aa": 1}
    late = {"advisoryCount": n, "schemaVersion": 1, "zeta": None}
    buf = io.BytesIO()
    w = canonical.StreamingObjectWriter(buf, "advisories", early)
    w.write_items(items)
    w.finish(late)
    assert w.count == n
    assert buf.getvalue() == canonical.dumps({**early, **late, "advisories": items})


def test_streaming_writer_rejects_misplaced_fields() -> None:
    with pytest.raises(ValueError, match="finish"):
        canonical.StreamingObjectWriter(io.BytesIO(), "advisories", {"zeta": 1})
    w = canonical.StreamingObjectWriter(io.BytesIO(), "m", {})
    with pytest.raises(ValueError, match="up front"):
        w.finish({"a": 1})


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_raw_items_are_byte_identical_to_serialised_items(n: int) -> None:
    """Items staged earlier as dumps_compact bytes stream to exactly the bytes of the whole object."""
    items = [{"z": i, "é": [i, None, 1.5], "a": {"y": "x\n" * i, "b": True}} for i in range(n)]
    buf = io.BytesIO()
    w = canonical.StreamingObjectWriter(buf, "advisories", {"aa": 1})
    for i, item in enumerate(items):
        if i % 2:
            w.write_item(item)  # raw and parsed items mix freely
        else:
            w.write_raw_item(canonical.dumps_compact(item))
    w.finish({"advisoryCount": n})
    assert w.count == n
    assert buf.getvalue() == canonical.dumps({"aa": 1, "advisoryCount": n, "advisories": items})


def test_raw_runs_of_items_are_byte_identical() -> None:
    items = [{"k": i, "v": "x" * i} for i in range(10)]
    buf = io.BytesIO()
    w = canonical.StreamingObjectWriter(buf, "advisories", {})
    for run in (items[0:3], [], items[3:4], items[4:10]):
        w.write_raw_items(b",".join(canonical.dumps_compact(i) for i in run), len(run))
    w.finish({})
    assert w.count == 10
    assert buf.getvalue() == canonical.dumps({"advisories": items})
