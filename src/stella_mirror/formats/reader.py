"""The one reader shape of both products (issue 17 item 8).

A reader is pure: a parsed document in, typed items out (Concelier: advisories; Excititor: VEX
claims). Anything wrong with the document becomes a :class:`~stella_mirror.errors.MalformedDocumentError`
naming the file and the RFC 6901 pointer of the offending field, never a ``KeyError`` or ``TypeError``.

Each product keeps its readers in one table (a mapping ``format → reader``, in detection order, as
vunnel keeps its ``_providers``); :func:`detect` asks each reader of a table in turn whether a parsed
document is its format. What happened to a whole *file* is one of three typed outcomes:
:class:`Read` (a result), :class:`Skipped` (not a document of the expected kind, with the reason) or
:class:`Rejected` (malformed: pointer and message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from stella_mirror.errors import MalformedDocumentError

T = TypeVar("T")


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer from path segments (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class ReadContext:
    """Who is reading what: the document's shown name, its source and the digest of its bytes."""

    path: str
    """The document's name in messages and provenance (relative to the configuration or source)."""
    source: str
    """The source (Concelier) or provider (Excititor) the document belongs to."""
    digest: str
    """``sha256:<hex>`` of the document's bytes."""

    def error(self, where: str, reason: str) -> MalformedDocumentError:
        """A malformed-document error naming this file and the JSON pointer ``where``."""
        return MalformedDocumentError(self.path, where, reason)


@dataclass
class ReadResult(Generic[T]):
    """The items one document yields, plus notes about parts that carried no usable item."""

    format: str
    items: list[T] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class DocumentReader(Protocol[T]):
    """A reader of one document format."""

    @property
    def format(self) -> str:
        """The format's name (``openvex``, ``csaf``, ``cyclonedx``, ``osv``)."""
        ...

    def detect(self, doc: Any) -> bool:
        """True when a parsed JSON/YAML document is of this format (by content, not file name)."""
        ...

    def read(self, doc: Any, ctx: ReadContext) -> ReadResult[T]:
        """The items of one parsed document; a malformed document raises MalformedDocumentError."""
        ...


def detect(readers: Mapping[str, DocumentReader[T]], doc: Any) -> DocumentReader[T] | None:
    """The first reader of a table that recognises ``doc``, or None."""
    for reader in readers.values():
        if reader.detect(doc):
            return reader
    return None


@dataclass(frozen=True)
class Read(Generic[T]):
    """A file that was read: its result."""

    path: str
    result: ReadResult[T]


@dataclass(frozen=True)
class Skipped:
    """A file that is not a document of the expected kind (a feed, a signature, a dot file), and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Rejected:
    """A malformed document: the JSON pointer of the bad field and the message naming file and field."""

    path: str
    pointer: str
    message: str

    @classmethod
    def of(cls, exc: MalformedDocumentError) -> Rejected:
        """The outcome of a malformed-document error."""
        return cls(exc.path, exc.pointer, str(exc))


Outcome = Read[T] | Skipped | Rejected
"""What became of one file."""


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


def require_str(ctx: ReadContext, value: Any, where: str) -> str:
    """A required non-empty string."""
    text = expect_str(ctx, value, where, required=True)
    assert text is not None
    return text
