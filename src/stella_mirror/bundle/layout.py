"""The one owner of the export layout: names, index paths and what a signed index lists — pure, no I/O
(except :func:`local_index_names`, which lists a directory on this host).

An export root holds complete exports by id and ``latest`` naming the active one; an export directory holds
``mirror/index.json`` (Concelier) or ``mirror/<domain>/index.json`` (Excititor, one per domain) and the
files those signed indexes list. Everything that reads or writes that shape — ``sync``, ``verify``,
``ops/remote`` — takes its names from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stella_mirror.bundle import canonical
from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.errors import MalformedBundleError

LATEST = "latest"
"""The symlink in an export root naming the active export."""
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""An export id, a domain id, an export key: one bounded path segment, never hidden, never ``..``."""
CONCELIER_INDEX = "mirror/index.json"
SIGNATURE_SUFFIXES = (".jws", ".sig")
"""The detached signatures beside a signed file: the JWS (authoritative) and the cosign-style ``.sig``."""


def safe_segment(name: str) -> bool:
    """A path segment we are willing to open: a bounded alphabet, no leading dot (so never ``..``)."""
    return bool(SEGMENT.match(name))


def valid_export_id(name: str) -> bool:
    """Export ids become directory names in an export root: one safe segment, and not ``latest``."""
    return safe_segment(name) and name != LATEST


def safe_relpath(value: Any, path: str, field_name: str) -> str:
    """A path from signed metadata must stay inside the export: relative, canonical, no ``..``, no NUL."""
    if not isinstance(value, str) or not value:
        raise MalformedBundleError(path, f"{field_name} must be a non-empty string")
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or "\x00" in value or any(p in ("", ".", "..") for p in parts):
        raise MalformedBundleError(path, f"{field_name} {value!r} leaves the export directory")
    return value


def canonical_relpath(name: str) -> bool:
    """``name`` is a canonical relative path (what :func:`safe_relpath` accepts): a source's listing holding
    anything else (``mirror//index.json``, ``./x``) is refused, naming the key, rather than normalised."""
    try:
        safe_relpath(name, name, "path")
    except MalformedBundleError:
        return False
    return True


def domain_index_path(domain_id: str) -> str:
    return f"mirror/{domain_id}/index.json"


def index_paths(kind: str, names: Iterable[str]) -> list[str]:
    """The signed index paths of a ``kind`` export among ``names`` (canonical paths relative to the export).

    Concelier has one index; an Excititor export has one per domain (``mirror/<domain>/index.json``).
    Domain names are only used to ask for ``…/index.json``; everything else comes from the signed indexes.
    """
    if kind == "concelier":
        return [CONCELIER_INDEX] if CONCELIER_INDEX in set(names) else []
    out = []
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "mirror" and parts[2] == "index.json" and safe_segment(parts[1]):
            out.append(name)
    return sorted(set(out))


def local_index_names(export_dir: Path) -> list[str]:
    """The candidate index paths of an export directory on this host (either product)."""
    mirror = export_dir / "mirror"
    names = [CONCELIER_INDEX] if (mirror / "index.json").is_file() else []
    if mirror.is_dir():
        names += [domain_index_path(p.name) for p in mirror.iterdir() if (p / "index.json").is_file()]
    return names


# --- what a signed index lists -----------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """A file a signed index lists: its path in the export, signed size and digest, and whether a
    detached ``.jws`` + ``.sig`` pair lives beside it."""

    rel: str
    size: int
    digest: str
    signed: bool
    optional: bool = False
    """May be absent (with its signatures): a Concelier domain's own index, which exports written before it
    existed do not have, and a payload's precompressed variant."""
    variant_of: str | None = None
    """For a precompressed variant (``<payload>.zst``): the payload it encodes."""


def file_ref(ref: Any, where: str, prefix: str = "", signed: bool = False) -> Listed:
    """A ``{path, sizeBytes, digest}`` reference of signed metadata (``where`` names it in errors); ``prefix``
    is the directory its path is relative to."""
    if not isinstance(ref, dict):
        raise MalformedBundleError(where, "file reference must be an object")
    rel = prefix + safe_relpath(ref.get("path"), where, "path")
    size, digest = ref.get("sizeBytes"), ref.get("digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str):
        raise MalformedBundleError(where, "sizeBytes/digest missing or of the wrong type")
    return Listed(rel, size, digest, signed)


def encodings(ref: dict[str, Any], payload_rel: str, where: str, prefix: str = "") -> list[Listed]:
    """A payload reference's precompressed variants (``encodings: [{encoding, path, sizeBytes, digest}]``):
    each must be the zstd form at ``<payload>.zst``. They are optional — a tree synced before variants were
    listed lacks them — and unsigned themselves: their size and digest come from the signed reference."""
    variants = ref.get("encodings", [])
    if not isinstance(variants, list):
        raise MalformedBundleError(where, "encodings must be a list")
    out = []
    for i, variant in enumerate(variants):
        vwhere = f"{where}/encodings/{i}"
        if not isinstance(variant, dict) or variant.get("encoding") != "zstd":
            raise MalformedBundleError(vwhere, "encoding must be 'zstd'")
        item = file_ref(variant, vwhere, prefix)
        if item.rel != payload_rel + ".zst":
            raise MalformedBundleError(vwhere, f"path must name {payload_rel}.zst")
        out.append(Listed(item.rel, item.size, item.digest, signed=False, optional=True, variant_of=payload_rel))
    return out


def concelier_domain(index: dict[str, Any], dom: Any, where: str) -> tuple[Listed, Listed, Listed]:
    """A Concelier domain entry's files: its manifest, its signed bundle, and its own signed index — which the
    full index does not list, but whose bytes follow from it (:func:`~stella_mirror.bundle.canonical.domain_index`),
    so its size and digest are known before it is read."""
    if not isinstance(dom, dict):
        raise MalformedBundleError(where, "domain entry must be an object")
    domain_id = dom.get("domainId")
    if not isinstance(domain_id, str) or not safe_segment(domain_id):
        raise MalformedBundleError(where, "domainId must be a safe path segment")
    manifest = file_ref(dom.get("manifest"), where + "/manifest")
    bundle = file_ref(dom.get("bundle"), where + "/bundle", signed=True)
    data = canonical.domain_index(index, dom)
    own = Listed(domain_index_path(domain_id), len(data), sha256_bytes(data), signed=True, optional=True)
    return manifest, bundle, own


def listed_files(indexes: Mapping[str, dict[str, Any]]) -> Iterator[Listed]:
    """Every file the parsed indexes list (``{index path: document}``), in index order — the one walker
    ``sync`` (what to fetch) and ``verify`` (what to check, through :func:`concelier_domain` and
    :func:`file_ref`) share."""
    for index_rel, doc in sorted(indexes.items()):
        if index_rel == CONCELIER_INDEX:  # Concelier: per domain a manifest and a signed bundle
            domains = doc.get("domains")
            for i, dom in enumerate(domains if isinstance(domains, list) else []):
                where = f"{index_rel}#/domains/{i}"
                manifest, bundle, own = concelier_domain(doc, dom, where)
                yield from (manifest, bundle, own)
                yield from encodings(dom["bundle"], bundle.rel, where + "/bundle")
        else:  # Excititor: mirror/<domain>/index.json lists artifacts relative to the domain directory
            prefix = index_rel.rsplit("/", 1)[0] + "/"
            exports = doc.get("exports")
            for i, entry in enumerate(exports if isinstance(exports, list) else []):
                artifact = file_ref(entry, f"{index_rel}#/exports/{i}", prefix, True)
                yield artifact
                yield from encodings(entry, artifact.rel, f"{index_rel}#/exports/{i}", prefix)


def domains_of(indexes: Mapping[str, dict[str, Any]]) -> list[str]:
    """The domain ids the parsed indexes of one export carry (Concelier: its ``domains``; Excititor: one
    index per domain)."""
    out: list[str] = []
    for rel, doc in indexes.items():
        if rel == CONCELIER_INDEX:
            domains = doc.get("domains")
            out += [str(d.get("domainId")) for d in domains if isinstance(d, dict)] if isinstance(domains, list) else []
        else:
            out.append(rel.split("/")[1])
    return sorted(set(out))


def export_identity(indexes: Mapping[str, dict[str, Any]]) -> tuple[str, int]:
    """The ``(exportId, sequence)`` every index of one export must agree on."""
    ids = {(doc.get("exportId"), doc.get("sequence")) for doc in indexes.values()}
    if len(ids) != 1:
        raise MalformedBundleError("mirror/", "the indexes disagree on exportId/sequence")
    export_id, sequence = ids.pop()
    if not isinstance(export_id, str) or not isinstance(sequence, int) or isinstance(sequence, bool):
        raise MalformedBundleError(sorted(indexes)[0], "exportId/sequence missing or of the wrong type")
    return export_id, sequence


# --- the route table: file of an export ↔ URL ↔ kind ↔ cache class ------------------------------------


@dataclass(frozen=True)
class Route:
    """Where a file of an export is served (the mirror's own routes, DESIGN S3/S4) and how it may be cached."""

    product: str
    rel: str
    """The file's path in the export directory."""
    url: str
    """The URL path (under the mirror's base), pinned to ``@<exportId>`` when one is given."""
    kind: str
    """``index``, ``domain-index``, ``manifest``, ``bundle``, ``artifact`` — or ``signature`` of one of them."""
    cache: str
    """``index`` (changes on every publish: short max-age) or ``payload`` (never changes under its URL within an
    export, and nothing does under a pinned URL: long max-age, immutable)."""


def _split_signature(name: str) -> tuple[str, str]:
    for suffix in SIGNATURE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def route(product: str, rel: str, export_id: str | None = None) -> Route:
    """The route of ``rel`` (a canonical path of a ``product`` export), pinned to ``export_id`` when given::

        mirror/index.json[.jws|.sig]                → /concelier/exports/[@<id>/]index.json[.jws|.sig]
        mirror/<domain>/<file>                      → /concelier/exports/[@<id>/]mirror/<domain>/<file>
        mirror/<domain>/index.json[.jws|.sig]       → /excititor/mirror/[@<id>/]<domain>/index[.jws|.sig]
        mirror/<domain>/exports/<key>/<file>[.jws…] → /excititor/mirror/[@<id>/]<domain>/exports/<key>/download[.jws…]

    Raises MalformedBundleError for a path no route serves."""
    pin = f"@{export_id}/" if export_id else ""
    parts = rel.split("/")
    name, suffix = _split_signature(parts[-1])
    if not canonical_relpath(rel) or parts[0] != "mirror" or (export_id is not None and not valid_export_id(export_id)):
        raise MalformedBundleError(rel, "no route serves this path")

    def made(url: str, kind: str, index: bool) -> Route:
        cache = "index" if index and not pin else "payload"
        return Route(product, rel, url, "signature" if suffix else kind, cache)

    if product == "concelier":
        if rel.removesuffix(suffix) == CONCELIER_INDEX:
            return made(f"/concelier/exports/{pin}index.json{suffix}", "index", True)
        if len(parts) == 3 and safe_segment(parts[1]):
            kind = {"index.json": "domain-index", "manifest.json": "manifest"}.get(name, "bundle")
            return made(f"/concelier/exports/{pin}{rel}", kind, kind == "domain-index")
    elif product == "excititor" and len(parts) >= 3 and safe_segment(parts[1]):
        if len(parts) == 3 and name == "index.json":
            return made(f"/excititor/mirror/{pin}{parts[1]}/index{suffix}", "index", True)
        if len(parts) >= 5 and parts[2] == "exports" and safe_segment(parts[3]):
            return made(f"/excititor/mirror/{pin}{parts[1]}/exports/{parts[3]}/download{suffix}", "artifact", False)
    raise MalformedBundleError(rel, "no route serves this path")
