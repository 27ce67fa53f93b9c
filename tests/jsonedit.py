"""Test documents with one value changed: ``edited(BASE, ["affected", 0, "ranges"], 7)`` or ``DELETE``."""

from __future__ import annotations

from typing import Any

import orjson

DELETE = object()
"""Passed as the value: remove the key (or list item) instead of setting it."""


def edited(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the value at ``path`` replaced (or deleted)."""
    doc: Any = orjson.loads(orjson.dumps(base))
    node = doc
    for step in path[:-1]:
        node = node[step]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return dict(doc)
