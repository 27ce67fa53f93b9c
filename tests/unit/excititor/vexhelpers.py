"""Helpers shared by the Excititor unit tests: read a document, build claims, write documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.excititor.claims import Claim
from stella_mirror.excititor.sources import ReadResult, VexContext, read_bytes
from stella_mirror.excititor.sources.cyclonedx import BomIndex


def read_file(
    path: Path, provider: str = "p", shown: str | None = None, boms: BomIndex | None = None
) -> ReadResult[Claim]:
    """Read one VEX file the way the loader does."""
    data = path.read_bytes()
    return read_bytes(data, VexContext(shown or path.name, provider, sha256_bytes(data), boms))


def read_doc(doc: Any, provider: str = "p", name: str = "doc.json", boms: BomIndex | None = None) -> ReadResult[Claim]:
    """Read an in-memory document."""
    data = orjson.dumps(doc)
    return read_bytes(data, VexContext(name, provider, sha256_bytes(data), boms))


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc))
    return path


def claim(
    provider: str,
    status: str,
    vuln: str = "CVE-2024-0001",
    product: str = "pkg:pypi/demo@1.0",
    justification: str | None = None,
    issued: str | None = "2024-01-01T00:00:00Z",
    aliases: tuple[str, ...] = (),
    digest: str | None = None,
    impact: str | None = None,
) -> Claim:
    """A claim as a reader would produce it (digest defaults to one per provider/status/time)."""
    return Claim(
        vulnerability_id=vuln,
        product_key=product,
        provider_id=provider,
        status=status,
        justification=justification,
        detail=None,
        document_digest=digest or sha256_bytes(f"{provider}{status}{issued}{vuln}".encode()),
        issued_at=issued,
        aliases=aliases,
        impact_statement=impact,
    )
