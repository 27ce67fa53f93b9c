"""VEX document readers: OpenVEX, CSAF (VEX and advisories), CycloneDX VEX.

:func:`detect` tells the formats apart by content (files carry no reliable extension), and
:func:`read_parsed` hands a parsed document to its reader.
"""

from __future__ import annotations

from typing import Any

from stella_mirror.excititor.sources import csaf_vex, cyclonedx, openvex
from stella_mirror.excititor.sources.base import ReadContext, ReadResult, parse_json

__all__ = ["ReadContext", "ReadResult", "detect", "parse_json", "read_bytes", "read_parsed"]


def detect(doc: Any) -> str | None:
    """``openvex``, ``csaf``, ``cyclonedx`` or None for a parsed JSON document."""
    if openvex.is_openvex(doc):
        return openvex.FORMAT
    if csaf_vex.is_csaf(doc):
        return csaf_vex.FORMAT
    if cyclonedx.is_cyclonedx(doc):
        return cyclonedx.FORMAT
    return None


def read_parsed(doc: Any, ctx: ReadContext, boms: cyclonedx.BomIndex | None = None) -> ReadResult:
    """Read a parsed document of any supported format; malformed or unknown → MalformedDocumentError."""
    fmt = detect(doc)
    if fmt == openvex.FORMAT:
        return openvex.read(doc, ctx)
    if fmt == csaf_vex.FORMAT:
        return csaf_vex.read(doc, ctx)
    if fmt == cyclonedx.FORMAT:
        return cyclonedx.read(doc, ctx, boms)
    raise ctx.error(
        "",
        "not a VEX document: expected an OpenVEX @context, a CSAF document.csaf_version or bomFormat CycloneDX",
    )


def read_bytes(data: bytes, ctx: ReadContext, boms: cyclonedx.BomIndex | None = None) -> ReadResult:
    """Parse and read one document."""
    return read_parsed(parse_json(data, ctx.path), ctx, boms)
