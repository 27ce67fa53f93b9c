"""VEX document readers: OpenVEX, CSAF (VEX and advisories), CycloneDX VEX.

:data:`READERS` is the one table of Excititor's readers (format → reader, in detection order); each is a
:class:`~stella_mirror.formats.reader.DocumentReader` of claims. :func:`detect` tells the formats apart by
content (files carry no reliable extension) and :func:`read_parsed` hands a parsed document to its reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stella_mirror.excititor.claims import Claim
from stella_mirror.excititor.sources import csaf_vex, cyclonedx, openvex
from stella_mirror.excititor.sources.base import ReadContext, ReadResult, VexContext, VexReader, parse_json
from stella_mirror.formats import reader as formats

__all__ = ["READERS", "ReadContext", "ReadResult", "VexContext", "detect", "parse_json", "read_bytes", "read_parsed"]

READERS: Mapping[str, VexReader] = {
    openvex.FORMAT: openvex.OpenVexReader(),
    csaf_vex.FORMAT: csaf_vex.CsafVexReader(),
    cyclonedx.FORMAT: cyclonedx.CycloneDxReader(),
}


def detect(doc: Any) -> str | None:
    """``openvex``, ``csaf``, ``cyclonedx`` or None for a parsed JSON document."""
    found = formats.detect(READERS, doc)
    return found.format if found is not None else None


def read_parsed(doc: Any, ctx: ReadContext) -> ReadResult[Claim]:
    """Read a parsed document of any supported format; malformed or unknown → MalformedDocumentError."""
    found = formats.detect(READERS, doc)
    if found is None:
        raise ctx.error(
            "",
            "not a VEX document: expected an OpenVEX @context, a CSAF document.csaf_version or bomFormat CycloneDX",
        )
    return found.read(doc, ctx)


def read_bytes(data: bytes, ctx: ReadContext) -> ReadResult[Claim]:
    """Parse and read one document."""
    return read_parsed(parse_json(data, ctx.path), ctx)
