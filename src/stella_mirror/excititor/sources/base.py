"""What the three VEX readers share: the shared reader shape (:mod:`stella_mirror.formats.reader`), the
Excititor read context (which also carries the BOMs supplied with the documents) and text helpers.

Readers are pure: a parsed document in, claims out. Anything wrong with a document becomes a
:class:`~stella_mirror.errors.MalformedDocumentError` naming the file and the RFC 6901 pointer of the
offending field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stella_mirror.excititor.claims import Claim
from stella_mirror.formats.reader import (
    DocumentReader,
    ReadContext,
    ReadResult,
    expect_list,
    expect_object,
    expect_str,
    parse_json,
    pointer,
    require_str,
)

if TYPE_CHECKING:
    from stella_mirror.excititor.sources.cyclonedx import BomIndex

VexReader = DocumentReader[Claim]
"""A VEX reader: documents in, :class:`~stella_mirror.excititor.claims.Claim` items out."""

__all__ = [
    "ReadContext",
    "ReadResult",
    "VexContext",
    "VexReader",
    "expect_list",
    "expect_object",
    "expect_str",
    "join_text",
    "parse_json",
    "pointer",
    "require_str",
]


@dataclass
class VexContext(ReadContext):
    """The read context of a VEX document: ``source`` is the provider id; ``boms`` the CycloneDX BOMs
    supplied with the documents (BOM-Link resolution), when any."""

    boms: BomIndex | None = field(default=None)

    @property
    def provider_id(self) -> str:
        """The provider the document belongs to."""
        return self.source


def join_text(parts: list[str]) -> str | None:
    """Join free-text fragments (deduplicated, in order) into one detail string, or None."""
    seen: list[str] = []
    for p in parts:
        text = p.strip()
        if text and text not in seen:
            seen.append(text)
    return "\n".join(seen) if seen else None
