"""Writers of the signed export trees (DESIGN §3–§4), shared by the Concelier and Excititor exports.

They write into a *staging* directory (see :mod:`stella_mirror.publish`); nothing here switches
``latest``. Bundles are streamed: advisories arrive as an iterator (already sorted by key) and are
written, hashed and counted on the way, so memory does not grow with the corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from stella_mirror.bundle import canonical
from stella_mirror.bundle.digest import Writable
from stella_mirror.bundle.files import open_atomic, open_signed, sign_file, write_atomic
from stella_mirror.bundle.model import (
    CONCELIER_BUNDLE_SCHEMA,
    SCHEMA_VERSION,
    ConcelierIndex,
    ConcelierIndexDomain,
    ConcelierManifest,
    Delta,
    ExcititorExportEntry,
    ExcititorIndex,
    SignedFileRef,
    SourceStat,
)
from stella_mirror.bundle.signing import SigningKey

INDEX = "index.json"
MANIFEST = "manifest.json"
BUNDLE = "bundle.json"


@dataclass
class ExportStamp:
    """Identity and freshness shared by every file of one export."""

    export_id: str
    sequence: int
    generated_at: str
    expires_at: str


def empty_delta(base: str | None = None) -> Delta:
    """A delta that lists no changes."""
    return {"baseExportId": base, "added": [], "changed": [], "removed": []}


class RawAdvisories(NamedTuple):
    """Consecutive advisories already serialised canonically: ``b",".join(canonical.dumps_compact(a) …)``.

    ``first_key``/``last_key`` are the advisory keys of the first and last one, for the order check
    across runs; the producer vouches for the order within the run.
    """

    first_key: str
    last_key: str
    size: int
    """How many advisories."""
    data: bytes


@dataclass
class ConcelierDomain:
    """One Concelier domain to write: its advisories (sorted by ``advisoryKey``) and statistics."""

    domain_id: str
    display_name: str
    advisories: Iterable[dict[str, Any] | RawAdvisories]
    sources: Callable[[], list[SourceStat]] = list
    """Called after streaming, so statistics can be gathered while advisories flow by."""
    delta: Callable[[], Delta] = field(default=lambda: empty_delta())


def write_concelier_export(
    stage: Path, stamp: ExportStamp, domains: list[ConcelierDomain], key: SigningKey
) -> ConcelierIndex:
    """Write ``mirror/index.json`` (+ .jws/.sig) and each domain's manifest, bundle and signatures."""
    mirror = stage / "mirror"
    index_domains: list[ConcelierIndexDomain] = []
    for dom in sorted(domains, key=lambda d: d.domain_id):
        ddir = mirror / dom.domain_id
        ddir.mkdir(parents=True, exist_ok=True)
        rel = f"mirror/{dom.domain_id}/"
        with open_signed(ddir / BUNDLE, key, rel) as out:
            writer = canonical.StreamingObjectWriter(out, "advisories", {})
            previous: str | None = None
            for adv in dom.advisories:
                if isinstance(adv, RawAdvisories):
                    adv_key, last_key = adv.first_key, adv.last_key
                else:
                    adv_key = last_key = adv["advisoryKey"]
                if previous is not None and adv_key <= previous:
                    raise ValueError(
                        f"advisories must be unique and sorted by advisoryKey ({adv_key!r} after {previous!r})"
                    )
                previous = last_key
                if isinstance(adv, RawAdvisories):
                    writer.write_raw_items(adv.data, adv.size)
                else:
                    writer.write_item(adv)
            count = writer.count
            writer.finish(
                {
                    "advisoryCount": count,
                    "domainId": dom.domain_id,
                    "schemaVersion": CONCELIER_BUNDLE_SCHEMA,
                }
            )
        signature = out.signature
        assert signature is not None
        bundle_ref: SignedFileRef = {
            "path": rel + BUNDLE,
            "sizeBytes": out.size,
            "digest": out.digest,
            "signature": signature,
        }
        sources = dom.sources()
        manifest: ConcelierManifest = {
            "schemaVersion": SCHEMA_VERSION,
            "exportId": stamp.export_id,
            "sequence": stamp.sequence,
            "generatedAt": stamp.generated_at,
            "domainId": dom.domain_id,
            "displayName": dom.display_name,
            "advisoryCount": count,
            "bundle": bundle_ref,
            "sources": sources,
            "delta": dom.delta(),
        }
        mref = write_atomic(ddir / MANIFEST, canonical.dumps(manifest))
        index_domains.append(
            {
                "domainId": dom.domain_id,
                "displayName": dom.display_name,
                "advisoryCount": count,
                "manifest": {"path": rel + MANIFEST, "sizeBytes": mref["sizeBytes"], "digest": mref["digest"]},
                "bundle": bundle_ref,
                "sources": sources,
            }
        )
    index: ConcelierIndex = {
        "schemaVersion": SCHEMA_VERSION,
        "exportId": stamp.export_id,
        "sequence": stamp.sequence,
        "generatedAt": stamp.generated_at,
        "expiresAt": stamp.expires_at,
        "domains": index_domains,
    }
    write_atomic(mirror / INDEX, canonical.dumps(index))
    sign_file(key, mirror / INDEX, "mirror/")
    # Each domain's own signed index — the index with only that domain — is what a caller who may read only
    # that domain gets at /concelier/exports/index.json: the other domains are never shown to it.
    for entry in index_domains:
        write_atomic(mirror / entry["domainId"] / INDEX, canonical.domain_index(index, entry))
        sign_file(key, mirror / entry["domainId"] / INDEX, f"mirror/{entry['domainId']}/")
    return index


@dataclass
class ExcititorArtifact:
    """One Excititor export to write: ``write`` streams the artifact's bytes and returns its record count."""

    export_key: str
    format: str
    view: str
    filename: str
    write: Callable[[Writable], int]
    source_providers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    """Additional index fields (e.g. ``policyRevision``)."""


def write_excititor_domain(
    stage: Path,
    domain_id: str,
    display_name: str,
    stamp: ExportStamp,
    artifacts: list[ExcititorArtifact],
    key: SigningKey,
) -> ExcititorIndex:
    """Write ``mirror/<domain>/index.json`` (+ .jws/.sig) and every artifact with its signatures."""
    ddir = stage / "mirror" / domain_id
    entries: list[ExcititorExportEntry] = []
    for art in sorted(artifacts, key=lambda a: a.export_key):
        adir = ddir / "exports" / art.export_key
        adir.mkdir(parents=True, exist_ok=True)
        rel = f"exports/{art.export_key}/"
        with open_atomic(adir / art.filename) as out:
            count = art.write(out)
        signature = sign_file(key, adir / art.filename, rel)
        entry: ExcititorExportEntry = {
            "exportKey": art.export_key,
            "format": art.format,
            "view": art.view,
            "path": rel + art.filename,
            "sizeBytes": out.size,
            "digest": out.digest,
            "signature": signature,
            "recordCount": count,
            "createdAt": stamp.generated_at,
            "sourceProviders": sorted(art.source_providers),
        }
        entry.update(art.extra)  # type: ignore[typeddict-item]
        entries.append(entry)
    index: ExcititorIndex = {
        "schemaVersion": SCHEMA_VERSION,
        "domainId": domain_id,
        "displayName": display_name,
        "exportId": stamp.export_id,
        "sequence": stamp.sequence,
        "generatedAt": stamp.generated_at,
        "expiresAt": stamp.expires_at,
        "exports": entries,
    }
    ddir.mkdir(parents=True, exist_ok=True)
    write_atomic(ddir / INDEX, canonical.dumps(index))
    sign_file(key, ddir / INDEX, f"mirror/{domain_id}/")
    return index


def read_sequence(export_dir: Path) -> int | None:
    """The sequence of an export directory of either product (None if it has no readable index)."""
    candidates = [export_dir / "mirror" / INDEX]
    mirror = export_dir / "mirror"
    if mirror.is_dir():
        candidates += sorted(p / INDEX for p in mirror.iterdir() if p.is_dir())
    for path in candidates:
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        seq = doc.get("sequence") if isinstance(doc, dict) else None
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None
