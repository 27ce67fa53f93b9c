"""Helpers shared by the Concelier unit tests."""

from __future__ import annotations

from typing import Any

from stella_mirror.concelier.model import Advisory, lowest_cve


def record(doc_id: str, aliases: list[str], source: str = "osv", **fields: Any) -> Advisory:
    rec: dict[str, Any] = {
        "advisoryKey": lowest_cve(aliases) or doc_id,
        "aliases": sorted({doc_id, *aliases}),
        "title": None,
        "summary": None,
        "description": None,
        "published": None,
        "modified": None,
        "withdrawn": None,
        "severity": None,
        "cvss": [],
        "cwes": [],
        "references": [],
        "affected": [],
        "provenance": [{"source": source, "documentId": doc_id, "digest": "sha256:" + "1" * 64, "recordedAt": None}],
    }
    rec.update(fields)
    return rec  # type: ignore[return-value]
