"""The trust rules a sync applies to an upstream index, as one pure object (python-tuf's ``TrustedMetadataSet``).

:class:`TrustedIndexSet` starts from the pinned keys, "now" and what the export root serves (its index bytes
and signatures, or only the sequence the last sync recorded when they are unreadable). An upstream index is
accepted by :meth:`TrustedIndexSet.update_index` only after, in this order:

1. **signature** — every index's detached JWS (and its ``.sig`` when there is one) verifies against a pinned
   key; an index without one is unsigned. Nothing of an index is read before this holds, so a forged index
   is reported as a signature failure whatever it claims;
2. **shape** — schemaVersion, ``exportId`` (a safe directory name), ``sequence``, times, what it lists;
3. **expiry** — ``expiresAt`` is in the future;
4. **sequence** — above the served one (equal only when ``allow_same``): a rollback is refused.

Only then are its fields facts (messages quote them); before, errors name the file, never a claimed value.
:meth:`TrustedIndexSet.check_file` checks a file (its bytes or a digest) against the accepted index, and
:meth:`TrustedIndexSet.check_kit_manifest` an offline kit's ``kit.json`` against it (a manifest of another
export is refused). No file system, no network: ``sync/job.py`` does the I/O around it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from stella_mirror.bundle import layout
from stella_mirror.bundle.model import SCHEMA_VERSION
from stella_mirror.bundle.signing import TrustedKeys, verify_blob_sig, verify_detached_jws
from stella_mirror.bundle.verify import parse_time
from stella_mirror.errors import (
    BundleError,
    DigestError,
    EqualSequenceError,
    ExpiredError,
    MalformedBundleError,
    RollbackError,
    SignatureError,
)


@dataclass(frozen=True)
class TrustedIndex:
    """The signed index(es) of one export, verified: every field is a fact signed by a pinned key."""

    kind: str
    export_id: str
    sequence: int
    generated_at: datetime
    expires_at: datetime
    indexes: Mapping[str, bytes]
    """Index path → bytes, as signed."""
    signatures: Mapping[str, bytes]
    """``<index>.jws`` / ``<index>.sig`` → bytes (the ``.sig`` only where the source has one)."""
    docs: Mapping[str, dict[str, Any]]
    files: tuple[layout.Listed, ...]
    """Every file the indexes list (:func:`~stella_mirror.bundle.layout.listed_files`)."""
    key_ids: frozenset[str]
    _by_rel: dict[str, layout.Listed] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_rel.update((f.rel, f) for f in self.files)

    @property
    def domains(self) -> list[str]:
        return layout.domains_of(self.docs)

    def listed(self, rel: str) -> layout.Listed | None:
        return self._by_rel.get(rel)


def _verify(
    kind: str, keys: TrustedKeys, indexes: Mapping[str, bytes], signatures: Mapping[str, bytes], now: datetime | None
) -> TrustedIndex:
    """Signature, then shape, then (unless ``now`` is None) expiry of one export's indexes."""
    if not indexes:
        raise MalformedBundleError("mirror/", f"no signed {kind} index")
    expected = {layout.CONCELIER_INDEX} if kind == "concelier" else set(layout.index_paths(kind, indexes))
    if set(indexes) != expected:
        raise MalformedBundleError(sorted(indexes)[0], f"not where a {kind} export keeps its signed index")
    kids: set[str] = set()
    for rel in sorted(indexes):  # 1. every signature, before anything the index says is looked at
        jws = signatures.get(rel + ".jws")
        if jws is None:
            raise SignatureError(rel + ".jws", "missing: the index is not signed")
        kids.add(verify_detached_jws(jws, indexes[rel], keys, rel + ".jws"))
        sig = signatures.get(rel + ".sig")
        if sig is not None:
            verify_blob_sig(sig, indexes[rel], keys, rel + ".sig")
    docs: dict[str, dict[str, Any]] = {}
    for rel, data in sorted(indexes.items()):  # 2. shape
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MalformedBundleError(rel, f"not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise MalformedBundleError(rel, "top level is not a JSON object")
        if doc.get("schemaVersion") != SCHEMA_VERSION:
            raise MalformedBundleError(rel, f"schemaVersion must be {SCHEMA_VERSION}")
        if kind == "excititor" and doc.get("domainId") != rel.split("/")[1]:
            raise MalformedBundleError(rel, f"domainId must be {rel.split('/')[1]!r}")
        docs[rel] = doc
    export_id, sequence = layout.export_identity(docs)
    if not layout.valid_export_id(export_id):
        raise MalformedBundleError(sorted(docs)[0], f"exportId {export_id!r} is not a valid export id")
    generated = min(parse_time(d.get("generatedAt"), rel, "generatedAt") for rel, d in docs.items())
    expires = min(parse_time(d.get("expiresAt"), rel, "expiresAt") for rel, d in docs.items())
    files = tuple(layout.listed_files(docs))
    if now is not None and expires <= now:  # 3. expiry
        raise ExpiredError(sorted(docs)[0], f"index of export {export_id} expired at {expires.isoformat()}")
    return TrustedIndex(
        kind, export_id, sequence, generated, expires, dict(indexes), dict(signatures), docs, files, frozenset(kids)
    )


class TrustedIndexSet:
    """What a sync into one export root trusts: the pinned keys, the served export, and the index it accepts."""

    def __init__(
        self, kind: str, keys: TrustedKeys, now: datetime, *, floor: int | None = None, allow_same: bool = False
    ) -> None:
        self.kind = kind
        self.keys = keys
        self.now = now
        self.floor = floor
        """The lowest sequence acceptable: the served one (or the last one a sync recorded)."""
        self.allow_same = allow_same
        self.served: TrustedIndex | None = None
        self.accepted: TrustedIndex | None = None

    def load_served(self, indexes: Mapping[str, bytes], signatures: Mapping[str, bytes]) -> TrustedIndex | None:
        """Trust what the root serves when its indexes still verify (it may have expired since: that is the
        upstream's to fix); its sequence becomes the floor. None (and the floor kept) when they do not."""
        try:
            served = _verify(self.kind, self.keys, indexes, signatures, None)
        except BundleError:
            return None
        self.served = served
        self.floor = served.sequence if self.floor is None else max(self.floor, served.sequence)
        return served

    def update_index(self, indexes: Mapping[str, bytes], signatures: Mapping[str, bytes]) -> TrustedIndex:
        """Accept the upstream's indexes (signature → shape → expiry → sequence), or raise
        :class:`SignatureError`, :class:`MalformedBundleError`, :class:`ExpiredError`, :class:`RollbackError`
        or :class:`EqualSequenceError`."""
        new = _verify(self.kind, self.keys, indexes, signatures, self.now)
        where = sorted(new.indexes)[0]
        if self.floor is not None:  # 4. sequence
            if new.sequence < self.floor:
                raise RollbackError(
                    where,
                    f"the source's sequence {new.sequence} (export {new.export_id}) is "
                    f"not newer than the served sequence {self.floor}",
                )
            if new.sequence == self.floor and not self.allow_same:
                raise EqualSequenceError(
                    where,
                    f"the source's sequence {new.sequence} (export {new.export_id}) "
                    "is not newer than the served one (--allow-same re-syncs it)",
                )
        if self.served is not None and self.served.export_id == new.export_id and self.served.sequence != new.sequence:
            raise MalformedBundleError(
                where,
                f"export {new.export_id} is served with sequence {self.served.sequence}, "
                f"the source signs it with {new.sequence}",
            )
        self.accepted = new
        return new

    def check_file(self, rel: str, data_or_digest: bytes | memoryview | str) -> layout.Listed:
        """``rel`` is listed by the accepted index and ``data_or_digest`` (its bytes, or a ``sha256:<hex>``
        digest known for them) is what it signs; DigestError otherwise."""
        if self.accepted is None:
            raise SignatureError(rel, "no index has been accepted yet")
        item = self.accepted.listed(rel)
        if item is None:
            raise DigestError(rel, "not listed by the signed index")
        if isinstance(data_or_digest, str):
            digest = data_or_digest
        else:
            size = len(memoryview(data_or_digest))
            if size != item.size:
                raise DigestError(rel, f"size {size} differs from the signed size {item.size}")
            digest = "sha256:" + hashlib.sha256(data_or_digest).hexdigest()
        if digest != item.digest:
            raise DigestError(rel, f"digest {digest} differs from the signed digest {item.digest}")
        return item

    def check_kit_manifest(self, manifest: Mapping[str, Any]) -> None:
        """An offline kit's ``kit.json`` describes the accepted export: same kind, export id and sequence
        (a kit manifest of another export, mixed with this export's files, is refused)."""
        if self.accepted is None:
            raise SignatureError("kit.json", "no index has been accepted yet")
        a = self.accepted
        claimed = (manifest.get("kind"), manifest.get("exportId"), manifest.get("sequence"))
        if claimed != (a.kind, a.export_id, a.sequence):
            raise MalformedBundleError(
                "kit.json", f"does not describe the signed export ({a.kind} {a.export_id}, sequence {a.sequence})"
            )
