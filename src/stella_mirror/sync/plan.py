"""What a signed index lists, as files to put into a staging directory — pure, no I/O.

The paths come from the signed index only (each checked with ``bundle.verify.safe_relpath``), so a source
cannot make the sync write outside its staging directory or fetch anything the index does not name. Full
checking (types, digests, signatures, manifests) is :mod:`stella_mirror.bundle.verify`'s, on the staged tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stella_mirror.bundle import canonical
from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.bundle.verify import safe_relpath
from stella_mirror.errors import MalformedBundleError


@dataclass(frozen=True)
class Listed:
    """A file a signed index lists: its path in the export, signed size and digest, and whether a
    detached ``.jws`` + ``.sig`` pair lives beside it."""

    rel: str
    size: int
    digest: str
    signed: bool
    optional: bool = False
    """May be absent at the source (with its signatures): a Concelier domain's own index, which exports
    written before it existed do not have."""


def _ref(ref: Any, where: str, prefix: str, signed: bool) -> Listed:
    if not isinstance(ref, dict):
        raise MalformedBundleError(where, "file reference must be an object")
    rel = prefix + safe_relpath(ref.get("path"), where, "path")
    size, digest = ref.get("sizeBytes"), ref.get("digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str):
        raise MalformedBundleError(where, "sizeBytes/digest missing or of the wrong type")
    return Listed(rel, size, digest, signed)


def _domain_index(index: dict[str, Any], dom: dict[str, Any], where: str) -> Listed:
    """The domain's own signed index: not listed by the full index, but its bytes follow from it
    (:func:`~stella_mirror.bundle.canonical.domain_index`), so its size and digest are known before fetching."""
    domain_id = dom.get("domainId")
    if not isinstance(domain_id, str):
        raise MalformedBundleError(where, "domainId must be a string")
    data = canonical.domain_index(index, dom)
    rel = safe_relpath(f"mirror/{domain_id}/index.json", where, "domainId")
    return Listed(rel, len(data), sha256_bytes(data), signed=True, optional=True)


def listed_files(indexes: Mapping[str, dict[str, Any]]) -> Iterator[Listed]:
    """Every file the parsed indexes list (``{index path: document}``), in index order."""
    for index_rel, doc in sorted(indexes.items()):
        if index_rel == "mirror/index.json":  # Concelier: per domain a manifest and a signed bundle
            domains = doc.get("domains")
            for i, dom in enumerate(domains if isinstance(domains, list) else []):
                where = f"{index_rel}#/domains/{i}"
                if not isinstance(dom, dict):
                    raise MalformedBundleError(where, "domain entry must be an object")
                yield _ref(dom.get("manifest"), where + "/manifest", "", False)
                yield _ref(dom.get("bundle"), where + "/bundle", "", True)
                yield _domain_index(doc, dom, where)
        else:  # Excititor: mirror/<domain>/index.json lists artifacts relative to the domain directory
            prefix = index_rel.rsplit("/", 1)[0] + "/"
            exports = doc.get("exports")
            for i, entry in enumerate(exports if isinstance(exports, list) else []):
                yield _ref(entry, f"{index_rel}#/exports/{i}", prefix, True)


def export_identity(indexes: Mapping[str, dict[str, Any]]) -> tuple[str, int]:
    """The ``(exportId, sequence)`` every index of one export must agree on (not yet verified: a name
    for the staging directory and an early rollback check; verification decides)."""
    ids = {(doc.get("exportId"), doc.get("sequence")) for doc in indexes.values()}
    if len(ids) != 1:
        raise MalformedBundleError("mirror/", "the indexes disagree on exportId/sequence")
    export_id, sequence = ids.pop()
    if not isinstance(export_id, str) or not isinstance(sequence, int) or isinstance(sequence, bool):
        raise MalformedBundleError(sorted(indexes)[0], "exportId/sequence missing or of the wrong type")
    return export_id, sequence
