"""Shapes of the signed formats (schemaVersion 1), as typed dictionaries.

The JSON on disk is the contract (DESIGN §4; JSON Schemas in ``schema/``); these types let the code
that builds and checks it be type-checked. Field names are the wire names.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

SCHEMA_VERSION = 1
"""Of the signed indexes and manifests."""

CONCELIER_BUNDLE_SCHEMA = 2
"""Of a Concelier ``bundle.json``. 2: lossless OSV records (events, repo, per-package severity, the source
document in each provenance entry) and no ``exportId``/``generatedAt``, so the same input gives the same
bytes in every export. Readers of bundles (verify, sync) accept 1 and 2: they check bytes, not content."""

EXCITITOR_ARTIFACT_SCHEMA = 2
"""schemaVersion of Excititor artifacts (consensus/claims JSON): 2 since they are content-addressed (no
exportId/generatedAt; issue 20) and carry subcomponents and impact statements (issue 17). Indexes stay
at :data:`SCHEMA_VERSION`; ``verify`` and ``sync`` check artifacts by signed digest, not by their
schemaVersion, so exports with version-1 artifacts keep verifying and syncing."""


class SignatureRef(TypedDict):
    """Where a detached JWS lives and which key made it."""

    path: str
    algorithm: str
    keyId: str


class FileRef(TypedDict):
    """A file named in signed metadata: path relative to the export, exact size and digest."""

    path: str
    sizeBytes: int
    digest: str


class SignedFileRef(FileRef):
    """A file that also carries a detached signature."""

    signature: SignatureRef


class SourceStat(TypedDict):
    """How many advisories one source contributed to a domain."""

    source: str
    advisoryCount: int
    lastRecordedAt: str | None


class ConcelierIndexDomain(TypedDict):
    domainId: str
    displayName: str
    advisoryCount: int
    manifest: FileRef
    bundle: SignedFileRef
    sources: list[SourceStat]


class ConcelierIndex(TypedDict):
    schemaVersion: int
    exportId: str
    sequence: int
    generatedAt: str
    expiresAt: str
    domains: list[ConcelierIndexDomain]


class Delta(TypedDict):
    baseExportId: str | None
    added: list[str]
    changed: list[str]
    removed: list[str]


class ConcelierManifest(TypedDict):
    schemaVersion: int
    exportId: str
    sequence: int
    generatedAt: str
    domainId: str
    displayName: str
    advisoryCount: int
    bundle: SignedFileRef
    sources: list[SourceStat]
    delta: Delta


class ExcititorExportEntry(TypedDict):
    exportKey: str
    format: str
    view: str
    path: str
    sizeBytes: int
    digest: str
    signature: SignatureRef
    recordCount: int
    createdAt: str
    sourceProviders: list[str]
    policyRevision: NotRequired[str]


class ExcititorIndex(TypedDict):
    schemaVersion: int
    domainId: str
    displayName: str
    exportId: str
    sequence: int
    generatedAt: str
    expiresAt: str
    exports: list[ExcititorExportEntry]


JSONObject = dict[str, Any]
