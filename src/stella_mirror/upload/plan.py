"""What a verified export consists of, in the order a target must receive it — no network, no writes.

Only files the signed indexes cover are published: the indexes and their ``.jws``/``.sig``, and what they list
(with each signed file's ``.jws``/``.sig``); anything else lying in the export directory is not part of the
export and stays behind. The order, by phase:

1. **payloads** — bundles and Excititor artifacts, with their signatures;
2. **manifests** (Concelier);
3. **per-domain indexes** (Concelier's ``mirror/<domain>/index.json``);
4. **the top-level index(es)** — Concelier's ``mirror/index.json``, Excititor's ``mirror/<domain>/index.json``.

Within a phase a file's ``.sig`` and ``.jws`` come before the file itself. So when a reader sees an index, every
file it names — its own signatures included — was written before it (docs/publish.md says why the signatures
go first rather than after).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stella_mirror.bundle.layout import Listed, index_paths, listed_files, local_index_names
from stella_mirror.bundle.verify import Verdict
from stella_mirror.errors import MalformedBundleError

PAYLOAD, MANIFEST, DOMAIN_INDEX, INDEX = range(4)
PHASES = ("payloads", "manifests", "domain indexes", "index")
SIGNATURES = (".sig", ".jws")
"""The detached signatures beside a signed file, in the order they are written (both before the file)."""


@dataclass(frozen=True)
class Item:
    """One file of the export: its path relative to the export directory, size, SHA-256 (hex) and phase."""

    rel: str
    size: int
    sha256: str
    phase: int


@dataclass(frozen=True)
class Plan:
    """A verified export and its files in publication order."""

    kind: str
    export_id: str
    sequence: int
    export_dir: Path
    items: tuple[Item, ...]

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.items)

    def waves(self) -> list[list[Item]]:
        """The items in groups a target writes one after the other; the files of one group may be written side by
        side. Per phase: first the detached signatures, then the files they sign."""
        groups: list[list[Item]] = [[] for _ in range(2 * len(PHASES))]
        for item in self.items:
            groups[2 * item.phase + (0 if item.rel.endswith(SIGNATURES) else 1)].append(item)
        return [g for g in groups if g]


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a local file, read a MiB at a time."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_indexes(export_dir: Path, kind: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The index paths of a local export directory and their parsed documents."""
    indexes = index_paths(kind, local_index_names(export_dir))
    docs = {}
    for rel in indexes:
        try:
            doc = orjson.loads((export_dir / rel).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise MalformedBundleError(rel, f"not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise MalformedBundleError(rel, "top level is not a JSON object")
        docs[rel] = doc
    return indexes, docs


def _phase(listed: Listed, kind: str) -> int:
    if listed.variant_of is not None:  # a precompressed payload goes with the payloads
        return PAYLOAD
    if listed.optional:  # otherwise only Concelier's per-domain index is listed as optional (bundle.layout)
        return DOMAIN_INDEX
    return MANIFEST if kind == "concelier" and not listed.signed else PAYLOAD


def plan_export(export_dir: Path, verdict: Verdict) -> Plan:
    """The publication plan of ``export_dir``, which ``verdict`` says verified.

    Listed files carry the digest the signed index gives (the verification just checked the bytes against it);
    indexes and detached signatures, which nothing lists, are hashed here.
    """
    indexes, docs = read_indexes(export_dir, verdict.product)
    items: list[Item] = []

    def signatures(rel: str, phase: int) -> None:
        for suffix in SIGNATURES:
            path = export_dir / (rel + suffix)
            if path.is_file():  # an index's .sig is optional (as in verify)
                items.append(Item(rel + suffix, path.stat().st_size, file_sha256(path), phase))

    for listed in listed_files(docs):
        path = export_dir / listed.rel
        if listed.optional and not path.is_file():
            continue  # an export written before per-domain indexes existed
        phase = _phase(listed, verdict.product)
        if listed.signed:
            signatures(listed.rel, phase)
        items.append(Item(listed.rel, listed.size, listed.digest.removeprefix("sha256:"), phase))
    for rel in indexes:
        signatures(rel, INDEX)
        path = export_dir / rel
        items.append(Item(rel, path.stat().st_size, file_sha256(path), INDEX))
    items.sort(key=lambda i: i.phase)  # stable: signatures stay before their file
    return Plan(verdict.product, verdict.export_id, verdict.sequence, export_dir, tuple(items))
