"""What the three VEX readers share: the read context, the result, JSON pointers and field checks.

Readers are pure: bytes in, claims out. Anything wrong with a document becomes a
:class:`~stella_mirror.errors.MalformedDocumentError` naming the file and the RFC 6901 pointer of the
offending field, never a ``KeyError`` or ``TypeError`` escaping to the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from stella_mirror.errors import MalformedDocumentError
from stella_mirror.excititor.claims import Claim


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer from path segments (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class ReadContext:
    """Who is reading what: the provider the document belongs to and how to name the file."""

    path: str
    """The document's path as shown in messages and claim provenance (relative to the config)."""
    provider_id: str
    digest: str
    """``sha256:<hex>`` of the document's bytes."""

    def error(self, where: str, reason: str) -> MalformedDocumentError:
        """A malformed-document error naming this file and the JSON pointer ``where``."""
        return MalformedDocumentError(self.path, where, reason)


@dataclass
class ReadResult:
    """The claims of one document, plus notes about statements that carried no usable claim."""

    format: str
    claims: list[Claim] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_json(data: bytes, path: str) -> Any:
    """Parse JSON bytes or raise a malformed-document error naming the file."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedDocumentError(path, "", f"not valid JSON: {exc}") from exc


def expect_object(ctx: ReadContext, value: Any, where: str, what: str = "an object") -> dict[str, Any]:
    """``value`` must be a JSON object."""
    if not isinstance(value, dict):
        raise ctx.error(where, f"must be {what}")
    return value


def expect_list(ctx: ReadContext, value: Any, where: str, required: bool = False) -> list[Any]:
    """``value`` must be a JSON array (an absent optional array reads as empty)."""
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ctx.error(where, "must be an array" if value is not None else "is required (an array)")
    return value


def expect_str(ctx: ReadContext, value: Any, where: str, required: bool = False) -> str | None:
    """``value`` must be a string (non-empty when required); None when optional and absent."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ctx.error(where, "must be a non-empty string" if required else "must be a string")
    return value


def join_text(parts: list[str]) -> str | None:
    """Join free-text fragments (deduplicated, in order) into one detail string, or None."""
    seen: list[str] = []
    for p in parts:
        text = p.strip()
        if text and text not in seen:
            seen.append(text)
    return "\n".join(seen) if seen else None
