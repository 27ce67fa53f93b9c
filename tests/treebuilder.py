"""Build small signed export trees for tests with the real bundle library (no fixtures on disk)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stella_mirror.bundle import canonical
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.bundle.writer import (
    ConcelierDomain,
    ExcititorArtifact,
    ExportStamp,
    read_sequence,
    write_concelier_export,
    write_excititor_domain,
)
from stella_mirror.publish import ExportRoot, next_sequence
from stella_mirror.timeutil import rfc3339


def advisory(key: str, ecosystem: str = "PyPI", package: str = "demo") -> dict[str, Any]:
    """A minimal canonical advisory."""
    return {
        "advisoryKey": key,
        "aliases": [key],
        "title": f"Advisory {key}",
        "summary": f"Summary of {key}",
        "description": "",
        "published": "2024-01-01T00:00:00Z",
        "modified": "2024-01-02T00:00:00Z",
        "withdrawn": None,
        "severity": "high",
        "cvss": [],
        "cwes": [],
        "references": [],
        "affected": [{"ecosystem": ecosystem, "package": package, "purl": None, "ranges": [], "versions": []}],
        "provenance": [{"source": "test", "documentId": key, "digest": "sha256:" + "0" * 64, "recordedAt": None}],
    }


def stamp(
    export_id: str, sequence: int, now: datetime | None = None, ttl: timedelta = timedelta(days=7)
) -> ExportStamp:
    now = now or datetime.now(UTC).replace(microsecond=0)
    return ExportStamp(export_id, sequence, rfc3339(now), rfc3339(now + ttl))


def publish_concelier(
    root: Path,
    key: SigningKey,
    domains: dict[str, list[dict[str, Any]]],
    export_id: str,
    ttl: timedelta = timedelta(days=7),
    keep: int = 3,
) -> Path:
    """Write and publish a Concelier export; returns the export directory."""
    er = ExportRoot(root)
    with er.locked():
        seq = next_sequence(er, read_sequence)
        with er.staging(export_id) as stage:
            doms = [
                ConcelierDomain(d, d.title(), sorted(advs, key=lambda a: a["advisoryKey"]))
                for d, advs in domains.items()
            ]
            write_concelier_export(stage, stamp(export_id, seq, ttl=ttl), doms, key)
            return er.commit(stage, export_id, keep)


def publish_excititor(
    root: Path,
    key: SigningKey,
    domains: dict[str, dict[str, list[dict[str, Any]]]],
    export_id: str,
    ttl: timedelta = timedelta(days=7),
) -> Path:
    """Write and publish an Excititor export: ``{domain: {exportKey: [records]}}`` as JSON arrays."""
    er = ExportRoot(root)
    with er.locked():
        seq = next_sequence(er, read_sequence)
        with er.staging(export_id) as stage:
            st = stamp(export_id, seq, ttl=ttl)
            for domain_id, exports in domains.items():
                arts = []
                for export_key, records in exports.items():

                    def write(out: Any, records: list[dict[str, Any]] = records) -> int:
                        out.write(canonical.dumps(records))
                        return len(records)

                    arts.append(
                        ExcititorArtifact(export_key, "json", "consensus", f"{export_key}.json", write, ["test"])
                    )
                write_excititor_domain(stage, domain_id, domain_id.title(), st, arts, key)
            return er.commit(stage, export_id)
