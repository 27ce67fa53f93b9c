"""Safe parsing of untrusted JSON and YAML documents.

JSON goes through orjson, which refuses nesting deeper than 1024 and invalid UTF-8 on its own.
YAML goes through libyaml (``CSafeLoader`` when available) with three guards:

- timestamps are *not* resolved, so ``modified: 2021-07-05T00:01:22Z`` written without quotes yields
  the same string as the quoted form (PyYAML would otherwise hand back a naive ``datetime``);
- anchors and aliases are limited to a handful: aliases are how "billion laughs" bombs blow up,
  and OSV documents never need them;
- nesting depth is capped, because PyYAML builds nested nodes recursively.

The alias and depth checks walk the event stream (no recursion, no node building) and only run when
the bytes could contain an alias or deep nesting, so ordinary documents are parsed once.

PyYAML is imported on the first YAML document: it compiles its resolver patterns at import (~10 ms),
which an export of JSON documents need not pay.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from stella_mirror.errors import MalformedDocumentError

MAX_ALIASES = 16
MAX_DEPTH = 64


@cache
def _loaders() -> tuple[Any, Any]:
    """(the base safe loader, a subclass of it that leaves timestamps as the strings they were written as)."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StringTimestampLoader(base):  # type: ignore[misc]
        pass

    StringTimestampLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    return base, StringTimestampLoader


def load_json(path: str, data: bytes) -> Any:
    """Parse JSON bytes; errors name the file and say what is wrong."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedDocumentError(path, "", f"not valid JSON: {exc}") from None


def _needs_event_scan(data: bytes) -> bool:
    # An alias needs '*' and an anchor '&'; deep nesting needs many brackets or deep indentation.
    if b"&" in data and b"*" in data:
        return True
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH:
        return True
    # Block nesting shows as deep indentation, or as "- - -" / "? ? ?" nodes written on one line.
    return b"\n" + b" " * MAX_DEPTH in data or b"- -" in data or b"? ?" in data


def _scan_events(path: str, data: bytes) -> None:
    import yaml

    depth = 0
    aliases = 0
    for event in yaml.parse(data, Loader=_loaders()[0]):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise MalformedDocumentError(
                    path, "", f"YAML document uses more than {MAX_ALIASES} aliases (refused: possible alias bomb)"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise MalformedDocumentError(path, "", f"YAML document nests deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_yaml(path: str, data: bytes) -> Any:
    """Parse one YAML document safely (see module docstring)."""
    import yaml

    try:
        if _needs_event_scan(data):
            _scan_events(path, data)
        return yaml.load(data, Loader=_loaders()[1])  # noqa: S506 - a SafeLoader subclass
    except MalformedDocumentError:
        raise
    except yaml.YAMLError as exc:
        reason = str(exc).replace("\n", " ")
        raise MalformedDocumentError(path, "", f"not valid YAML: {reason}") from None
    except (RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise MalformedDocumentError(path, "", f"not valid YAML: {type(exc).__name__}: {exc}") from None
