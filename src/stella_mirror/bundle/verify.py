"""Verification of export trees: pure — bytes, trusted keys and "now" in, a verdict or an error out.

Like python-tuf's ``TrustedMetadataSet``, nothing here touches the file system or the network. The
caller supplies a *reader*: a function from a path relative to the export directory to its bytes
(an mmap-backed memoryview is fine, so multi-GB bundles are never copied). ``bundle.store`` provides
the file-system reader; sync and pull provide their own over staged downloads.

Order of checks, so the first failure named is the most useful one:
signed index (JWS, then parse, schema, expiry, rollback) → each listed file (size, digest) → each
file's detached JWS and ``.sig`` → cross-checks between index and manifests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from typing_extensions import Buffer

from stella_mirror.bundle import chunks, layout
from stella_mirror.bundle.layout import CONCELIER_INDEX as CONCELIER_INDEX  # owned by bundle.layout
from stella_mirror.bundle.layout import safe_relpath as safe_relpath
from stella_mirror.bundle.model import SCHEMA_VERSION
from stella_mirror.bundle.signing import TrustedKeys, verify_blob_sig, verify_detached_jws
from stella_mirror.errors import (
    DigestError,
    ExpiredError,
    MalformedBundleError,
    RollbackError,
)

Reader = Callable[[str], Buffer]
"""Returns the bytes of a file relative to the export directory; raises FileNotFoundError if absent."""

@dataclass
class Verdict:
    """What a successful verification established."""

    product: str
    export_id: str
    sequence: int
    generated_at: str
    expires_at: str
    domains: list[str] = field(default_factory=list)
    key_ids: set[str] = field(default_factory=set)
    files_checked: int = 0
    bytes_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "product": self.product,
            "exportId": self.export_id,
            "sequence": self.sequence,
            "generatedAt": self.generated_at,
            "expiresAt": self.expires_at,
            "domains": self.domains,
            "keyIds": sorted(self.key_ids),
            "filesChecked": self.files_checked,
            "bytesChecked": self.bytes_checked,
        }


def parse_time(value: Any, path: str, field_name: str) -> datetime:
    """Parse an RFC 3339 timestamp from signed metadata."""
    if not isinstance(value, str):
        raise MalformedBundleError(path, f"{field_name} must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedBundleError(path, f"{field_name} is not RFC 3339: {value!r}") from exc
    if parsed.tzinfo is None:
        raise MalformedBundleError(path, f"{field_name} has no time zone")
    return parsed.astimezone(UTC)


def _read(reader: Reader, rel: str) -> Buffer:
    try:
        return reader(rel)
    except FileNotFoundError as exc:
        raise MalformedBundleError(rel, "file is missing") from exc


def _json_object(data: Buffer, path: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(bytes(data))
    except orjson.JSONDecodeError as exc:
        raise MalformedBundleError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedBundleError(path, "top level is not a JSON object")
    return obj


def _require(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], path: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise MalformedBundleError(path, f"field {key!r} is missing or has the wrong type")
    return value


class Checked(NamedTuple):
    """A file whose size and digest matched its signed reference."""

    rel: str
    data: Buffer
    sha256: bytes


class _Checker:
    """Shared state for one verification run."""

    def __init__(self, reader: Reader, keys: TrustedKeys, now: datetime, min_sequence: int | None) -> None:
        self.reader = reader
        self.keys = keys
        self.now = now
        self.min_sequence = min_sequence

    def signed_json(self, rel: str, verdict: Verdict) -> dict[str, Any]:
        """Read a JSON file with a detached JWS beside it; verify the JWS, then parse."""
        data = _read(self.reader, rel)
        jws = _read(self.reader, rel + ".jws")
        verdict.key_ids.add(verify_detached_jws(bytes(jws), data, self.keys, rel + ".jws"))
        # The JWS is the index's authoritative signature, but a .sig published beside it (for cosign /
        # openssl users) must not be wrong while we say OK; a pull that skipped it is still fine.
        try:
            sig = self.reader(rel + ".sig")
        except FileNotFoundError:
            sig = None
        if sig is not None:
            verify_blob_sig(bytes(sig), data, self.keys, rel + ".sig")
        verdict.files_checked += 1
        verdict.bytes_checked += len(memoryview(data))
        obj = _json_object(data, rel)
        if obj.get("schemaVersion") != SCHEMA_VERSION:
            raise MalformedBundleError(rel, f"schemaVersion must be {SCHEMA_VERSION}")
        return obj

    def signed_index(self, rel: str, product: str) -> tuple[dict[str, Any], Verdict]:
        """Verify and parse a signed index, check its freshness, and start the verdict from it."""
        probe = Verdict(product, "", 0, "", "")
        obj = self.signed_json(rel, probe)
        export_id = _require(obj, "exportId", str, rel)
        sequence = _require(obj, "sequence", int, rel)
        generated = _require(obj, "generatedAt", str, rel)
        expires = _require(obj, "expiresAt", str, rel)
        parse_time(generated, rel, "generatedAt")
        if parse_time(expires, rel, "expiresAt") <= self.now:
            raise ExpiredError(rel, f"index expired at {expires}")
        if self.min_sequence is not None and sequence < self.min_sequence:
            raise RollbackError(rel, f"sequence {sequence} is older than the last seen sequence {self.min_sequence}")
        verdict = Verdict(product, export_id, sequence, generated, expires)
        verdict.key_ids |= probe.key_ids
        verdict.files_checked, verdict.bytes_checked = probe.files_checked, probe.bytes_checked
        return obj, verdict

    def file(self, item: layout.Listed, verdict: Verdict) -> Checked:
        """Check one listed file (:mod:`~stella_mirror.bundle.layout`'s walker parsed its reference): its size
        and digest; return its path, bytes and SHA-256."""
        rel = item.rel
        data = _read(self.reader, rel)
        actual_size = len(memoryview(data))
        if actual_size != item.size:
            raise DigestError(rel, f"size {actual_size} differs from the signed size {item.size}")
        sha256 = hashlib.sha256(data).digest()
        actual = "sha256:" + sha256.hex()
        if actual != item.digest:
            raise DigestError(rel, f"digest {actual} differs from the signed digest {item.digest}")
        verdict.files_checked += 1
        verdict.bytes_checked += actual_size
        return Checked(rel, data, sha256)

    def detached(self, checked: Checked, sig_ref: Any, where: str, verdict: Verdict, prefix: str) -> None:
        """Check a file's .jws (named by the signature reference) and its .sig beside it (an ECDSA ``.sig``
        signs the SHA-256 the digest check computed: the payload is hashed once for both)."""
        rel, data = checked.rel, checked.data
        if not isinstance(sig_ref, dict):
            raise MalformedBundleError(where, "signature reference must be an object")
        jws_rel = prefix + safe_relpath(sig_ref.get("path"), where, "signature.path")
        if jws_rel != rel + ".jws":
            raise MalformedBundleError(where, f"signature.path must name {rel}.jws")
        kid = verify_detached_jws(bytes(_read(self.reader, jws_rel)), data, self.keys, jws_rel)
        if sig_ref.get("keyId") != kid:
            raise MalformedBundleError(where, f"signature.keyId does not name the signing key {kid}")
        verify_blob_sig(bytes(_read(self.reader, rel + ".sig")), data, self.keys, rel + ".sig", checked.sha256)
        verdict.key_ids.add(kid)

    def transfer_aids(
        self, checked: Checked, ref: dict[str, Any], table: Any, where: str, verdict: Verdict, prefix: str
    ) -> None:
        """A payload's listed precompressed variants (each checked by size and digest when present: a tree
        synced before they were listed lacks them) and its chunk table (checked for shape and total size)."""
        for variant in layout.encodings(ref, checked.rel, where, prefix):
            try:
                self.reader(variant.rel)
            except FileNotFoundError:
                continue
            self.file(variant, verdict)
        if table is not None:
            chunks.decode(table, len(memoryview(checked.data)), where + "/chunks")


def verify_index(
    reader: Reader, rel: str, product: str, keys: TrustedKeys, now: datetime, min_sequence: int | None = None
) -> tuple[dict[str, Any], Verdict]:
    """Verify one signed index alone — its JWS (and ``.sig`` if present), schemaVersion, expiry and sequence —
    and return it parsed; what a sync checks before it downloads anything the index lists."""
    return _Checker(reader, keys, now, min_sequence).signed_index(rel, product)


def verify_concelier(reader: Reader, keys: TrustedKeys, now: datetime, min_sequence: int | None = None) -> Verdict:
    """Verify a Concelier export directory (``mirror/index.json`` and everything it lists)."""
    ck = _Checker(reader, keys, now, min_sequence)
    index, verdict = ck.signed_index(CONCELIER_INDEX, "concelier")
    export_id, sequence = verdict.export_id, verdict.sequence
    domains = _require(index, "domains", list, CONCELIER_INDEX)
    seen: set[str] = set()
    for i, dom in enumerate(domains):
        where = f"{CONCELIER_INDEX}#/domains/{i}"
        manifest_item, bundle_item, own_index = layout.concelier_domain(index, dom, where)
        domain_id = dom["domainId"]
        if domain_id in seen:
            raise MalformedBundleError(where, f"domain {domain_id!r} is listed twice")
        seen.add(domain_id)
        manifest_rel, manifest_bytes, _ = ck.file(manifest_item, verdict)
        bundle = ck.file(bundle_item, verdict)
        expected_dir = f"mirror/{domain_id}/"
        if not manifest_rel.startswith(expected_dir) or not bundle.rel.startswith(expected_dir):
            raise MalformedBundleError(where, f"files of domain {domain_id!r} must live under {expected_dir}")
        ck.detached(bundle, dom["bundle"].get("signature"), where + "/bundle", verdict, "")
        manifest = _json_object(manifest_bytes, manifest_rel)
        ck.transfer_aids(bundle, dom["bundle"], manifest.get("bundleChunks"), where + "/bundle", verdict, "")
        _cross_check_manifest(manifest, manifest_rel, dom, export_id, sequence)
        _check_domain_index(ck, own_index, verdict)
        verdict.domains.append(domain_id)
    return verdict


def _check_domain_index(ck: _Checker, own: layout.Listed, verdict: Verdict) -> None:
    """A domain's own signed index (``mirror/<domain>/index.json``, written since the server shows callers only
    the domains they may read) must be signed and be the index with only that domain; older exports have none."""
    try:
        data = ck.reader(own.rel)
    except FileNotFoundError:
        return
    ck.signed_json(own.rel, verdict)
    if len(memoryview(data)) != own.size or "sha256:" + hashlib.sha256(data).hexdigest() != own.digest:
        raise MalformedBundleError(own.rel, "differs from the signed index restricted to this domain")


def _cross_check_manifest(
    manifest: dict[str, Any], rel: str, dom: dict[str, Any], export_id: str, sequence: int
) -> None:
    if manifest.get("schemaVersion") != SCHEMA_VERSION:
        raise MalformedBundleError(rel, f"schemaVersion must be {SCHEMA_VERSION}")
    for key, expected in (
        ("exportId", export_id),
        ("sequence", sequence),
        ("domainId", dom.get("domainId")),
        ("advisoryCount", dom.get("advisoryCount")),
        ("bundle", dom.get("bundle")),
    ):
        if manifest.get(key) != expected:
            raise MalformedBundleError(rel, f"manifest {key} disagrees with the signed index")


def verify_excititor_domain(
    reader: Reader, domain_id: str, keys: TrustedKeys, now: datetime, min_sequence: int | None = None
) -> Verdict:
    """Verify one Excititor domain: ``mirror/<domain>/index.json`` and every export it lists."""
    prefix = f"mirror/{domain_id}/"
    index_rel = prefix + "index.json"
    ck = _Checker(reader, keys, now, min_sequence)
    index, verdict = ck.signed_index(index_rel, "excititor")
    if index.get("domainId") != domain_id:
        raise MalformedBundleError(index_rel, f"domainId must be {domain_id!r}")
    verdict.domains.append(domain_id)
    exports = _require(index, "exports", list, index_rel)
    keys_seen: set[str] = set()
    for i, entry in enumerate(exports):
        where = f"{index_rel}#/exports/{i}"
        if not isinstance(entry, dict):
            raise MalformedBundleError(where, "export entry must be an object")
        export_key = _require(entry, "exportKey", str, where)
        safe_relpath(export_key, where, "exportKey")
        if "/" in export_key or export_key in keys_seen:
            raise MalformedBundleError(where, f"exportKey {export_key!r} is invalid or listed twice")
        keys_seen.add(export_key)
        artifact = ck.file(layout.file_ref(entry, where, prefix, signed=True), verdict)
        if not artifact.rel.startswith(f"{prefix}exports/{export_key}/"):
            raise MalformedBundleError(where, f"artifact must live under {prefix}exports/{export_key}/")
        ck.detached(artifact, entry.get("signature"), where, verdict, prefix)
        ck.transfer_aids(artifact, entry, entry.get("chunks"), where, verdict, prefix)
    return verdict


def verify_excititor(
    reader: Reader, domain_ids: list[str], keys: TrustedKeys, now: datetime, min_sequence: int | None = None
) -> Verdict:
    """Verify every listed Excititor domain of one export; they must agree on exportId and sequence."""
    if not domain_ids:
        raise MalformedBundleError("mirror/", "no Excititor domain index found")
    total: Verdict | None = None
    for domain_id in sorted(domain_ids):
        v = verify_excititor_domain(reader, domain_id, keys, now, min_sequence)
        if total is None:
            total = v
            continue
        if (v.export_id, v.sequence) != (total.export_id, total.sequence):
            raise MalformedBundleError(
                f"mirror/{domain_id}/index.json", "exportId/sequence differ from the other domains"
            )
        total.domains += v.domains
        total.key_ids |= v.key_ids
        total.files_checked += v.files_checked
        total.bytes_checked += v.bytes_checked
        total.expires_at = min(total.expires_at, v.expires_at)
    assert total is not None
    return total
