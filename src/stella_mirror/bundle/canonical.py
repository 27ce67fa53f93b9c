"""Canonical JSON: the only writer of bytes that get signed.

Canonical means UTF-8, object keys sorted, no insignificant white space, one trailing newline.
orjson gives us that byte-stably and fast. Large bundles are written as a stream with
:class:`StreamingObjectWriter`, which produces exactly the bytes :func:`dumps` would produce for
the same object without holding the array in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from stella_mirror.bundle.digest import Writable

_OPTS = orjson.OPT_SORT_KEYS


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to canonical JSON bytes (sorted keys, compact, trailing newline)."""
    return orjson.dumps(obj, option=_OPTS) + b"\n"


def dumps_compact(obj: Any) -> bytes:
    """Canonical JSON without the trailing newline (for embedding, e.g. one JSONL record)."""
    return orjson.dumps(obj, option=_OPTS)


def domain_index(index: Mapping[str, Any], entry: Mapping[str, Any]) -> bytes:
    """A Concelier domain's own index (``mirror/<domain>/index.json``): the export's signed index with only
    that domain's entry — what a caller who may read only that domain is shown. Its bytes follow from the
    full index, so the exporter writes them, ``verify`` checks them and ``sync`` knows their digest."""
    return dumps({**index, "domains": [entry]})


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON bytes."""
    return orjson.loads(data)


class StreamingObjectWriter:
    """Write one JSON object whose single large array member is streamed item by item.

    The output is byte-identical to ``dumps({**fields, array_key: list(items)})``: members are
    emitted in sorted key order, and the array's members are placed where their key sorts. Fields
    that sort *after* the array key may be supplied late (via :meth:`finish`), so counts known only
    after streaming (e.g. ``advisoryCount``) can still be written in canonical order.
    """

    def __init__(self, out: Writable, array_key: str, early_fields: Mapping[str, Any]) -> None:
        self._out = out
        self._key = array_key
        self._count = 0
        self._first_member = True
        late = [k for k in early_fields if k > array_key]
        if late:
            raise ValueError(f"fields sorting after {array_key!r} must be given to finish(): {late}")
        out.write(b"{")
        for k in sorted(early_fields):
            self._member(k, early_fields[k])
        self._sep()
        out.write(orjson.dumps(array_key) + b":[")

    def _sep(self) -> None:
        if not self._first_member:
            self._out.write(b",")
        self._first_member = False

    def _member(self, key: str, value: Any) -> None:
        self._sep()
        self._out.write(orjson.dumps(key) + b":" + orjson.dumps(value, option=_OPTS))

    def write_item(self, item: Any) -> None:
        """Append one array item (canonicalised)."""
        if self._count:
            self._out.write(b",")
        self._out.write(orjson.dumps(item, option=_OPTS))
        self._count += 1

    def write_raw_item(self, data: bytes) -> None:
        """Append one item given as its canonical bytes (``dumps_compact(item)``), copied unchanged.

        For items serialised earlier (e.g. staged on disk), so they need not be parsed and serialised
        again. The caller vouches that ``data`` is canonical JSON of one value: it is not checked.
        """
        self.write_raw_items(data, 1)

    def write_raw_items(self, data: bytes, count: int) -> None:
        """Append ``count`` items given as their canonical bytes joined by ``,``, copied unchanged (one write).

        ``b",".join(dumps_compact(item) for item in items)`` gives exactly what :meth:`write_item` would
        write for each; as with :meth:`write_raw_item`, the bytes are not checked.
        """
        if count <= 0:
            return
        if self._count:
            self._out.write(b",")  # not b"," + data: that would copy megabytes to prepend one byte
        self._out.write(data)
        self._count += count

    def write_items(self, items: Iterable[Any]) -> None:
        """Append many items."""
        for item in items:
            self.write_item(item)

    @property
    def count(self) -> int:
        """Items written so far."""
        return self._count

    def finish(self, late_fields: Mapping[str, Any]) -> None:
        """Close the array and write the fields that sort after the array key."""
        early = [k for k in late_fields if k < self._key]
        if early:
            raise ValueError(f"fields sorting before {self._key!r} must be given up front: {early}")
        self._out.write(b"]")
        for k in sorted(late_fields):
            self._member(k, late_fields[k])
        self._out.write(b"}\n")
