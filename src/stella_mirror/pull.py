"""``stella-mirror pull URL --domain D --out DIR`` (DESIGN B4, issue 20): a consumer's fetch of one domain.

``DIR`` is an export root (:class:`stella_mirror.publish.ExportRoot`): verified copies by export id and a
``latest`` link switched atomically, the last ``--keep`` copies kept. One run:

1. fetches the domain's signed index and verifies it first — signature against the pinned keys, expiry, and
   sequence against the copy ``DIR`` holds (an older one is a rollback, refused); nothing else is fetched or
   written before that;
2. fetches every file the index lists, pinned to its export id (``…/@<exportId>/…``), into a staging directory:
   a payload whose signed digest a kept copy already has is linked (0 bytes); a payload with a chunk table is
   rebuilt from the kept copies plus the missing byte ranges (:mod:`stella_mirror.transfer.delta`); otherwise
   the precompressed variant is fetched when listed and decompressed; downloads resume from ``DIR/.partial``;
3. verifies the staged export as ``verify`` does, then switches ``latest`` to it.

Any failure leaves ``latest`` and every kept copy as they were. A refused delta (a corrupt chunk, a wrong
table, a rebuilt payload with another digest) falls back to a full download of that payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from stella_mirror.bundle import chunks, layout, store
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.bundle.verify import Verdict, safe_relpath, verify_index
from stella_mirror.bundle.writer import read_sequence
from stella_mirror.errors import (
    BundleError,
    ConfigError,
    DigestError,
    HTTPStatusError,
    MalformedBundleError,
    SourceError,
    UnreachableError,
)
from stella_mirror.publish import ExportRoot, check_export_id
from stella_mirror.timeutil import utcnow
from stella_mirror.transfer import delta
from stella_mirror.transfer.readers import http_range_reader

INDEX_CAP = 64 << 20
SIGNATURE_CAP = 64 << 10
PARTIAL = ".partial"
PRODUCTS = {"/concelier/exports": "concelier", "/excititor/mirror": "excititor"}


@dataclass(frozen=True)
class Site:
    """Where one domain's files are at a mirror, and where they go in a local export directory."""

    product: str
    domain: str

    @property
    def index_rel(self) -> str:
        """The signed index in the local tree: Concelier's domain index stands in for ``mirror/index.json`` (it is
        the export's index restricted to this domain, signed), Excititor's is the domain's own."""
        return "mirror/index.json" if self.product == "concelier" else f"mirror/{self.domain}/index.json"

    def index_url(self, suffix: str = "") -> str:
        if self.product == "concelier":
            return f"/concelier/exports/mirror/{self.domain}/index.json{suffix}"
        return f"/excititor/mirror/{self.domain}/index" + {"": "", ".jws": ".jws", ".sig": ".sig"}[suffix]

    def file_url(self, export_id: str, rel: str, export_key: str | None, suffix: str = "") -> str:
        if self.product == "concelier":
            return f"/concelier/exports/@{export_id}/{rel}{suffix}"
        return f"/excititor/mirror/@{export_id}/{self.domain}/exports/{export_key}/download{suffix}"


def split_url(url: str) -> tuple[str, str]:
    """``https://host[/prefix]/concelier/exports`` or ``…/excititor/mirror`` → (base URL, product)."""
    trimmed = url.rstrip("/")
    for suffix, product in PRODUCTS.items():
        if trimmed.endswith(suffix) and trimmed.startswith(("https://", "http://")):
            return trimmed.removesuffix(suffix), product
    raise ConfigError("url", f"{url!r} is not an http(s)://…/concelier/exports or …/excititor/mirror URL")


@dataclass(frozen=True)
class Payload:
    """A signed file the index lists: where it goes, its signed size and digest, and its transfer aids."""

    rel: str
    size: int
    digest: str
    export_key: str | None
    encodings: list[dict[str, Any]]
    table: Any


@dataclass
class Wire:
    """What went over the wire, and how each payload was obtained."""

    requests: int = 0
    bytes: int = 0
    reused_bytes: int = 0
    how: dict[str, str] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class Options:
    keep: int = 3
    deltas: bool = True
    compressed: bool = True
    log: Callable[[str], None] = lambda _msg: None


class Fetcher:
    """The HTTP side of one pull: small capped downloads, resumable payload downloads, range reads."""

    def __init__(self, client: httpx.Client, partial_dir: Path, wire: Wire) -> None:
        self.client = client
        self.partial_dir = partial_dir
        self.wire = wire

    def small(self, path: str, cap: int, optional: bool = False) -> bytes | None:
        """A whole small file (an index, a signature, a manifest), refused past ``cap`` bytes."""
        body = bytearray()
        self.wire.requests += 1
        try:
            with self.client.stream("GET", path, headers={"Accept-Encoding": "identity"}) as response:
                if optional and response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise HTTPStatusError(f"{self.client.base_url}{path}", response.status_code)
                for block in response.iter_raw(1 << 16):
                    body += block
                    self.wire.bytes += len(block)
                    if len(body) > cap:
                        raise DigestError(path, f"{self.client.base_url}{path} is larger than {cap} bytes")
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{self.client.base_url}{path}: {type(exc).__name__}: {exc}") from None
        return bytes(body)

    def resumable(self, path: str, size: int, digest: str, encoding: str) -> tuple[Path, str]:
        """Download ``path`` in the representation ``encoding`` ("identity" or "zstd") into a ``.partial`` file
        named by the digest it must have, continuing a previous attempt with ``Range``. Returns the file and the
        encoding the server actually used (a server without the variant answers identity)."""
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        part = self.partial_dir / f"{digest.removeprefix('sha256:')}.{encoding}"
        have = part.stat().st_size if part.exists() else 0
        if have >= size:
            have = 0
        headers = {"Accept-Encoding": encoding}
        if have:
            headers["Range"] = f"bytes={have}-"
        self.wire.requests += 1
        try:
            with self.client.stream("GET", path, headers=headers) as response:
                got = response.headers.get("content-encoding", "identity")
                if response.status_code == 206 and got == encoding:
                    mode = "ab"
                elif response.status_code == 200:
                    mode, have = "wb", 0
                else:
                    raise HTTPStatusError(f"{self.client.base_url}{path}", response.status_code)
                expected = size if got == encoding else None
                with part.open(mode) as out:
                    written = have
                    for block in response.iter_raw(1 << 20):
                        written += len(block)
                        self.wire.bytes += len(block)
                        if expected is not None and written > expected:
                            raise DigestError(path, f"{self.client.base_url}{path} is larger than {expected} bytes")
                        out.write(block)
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{self.client.base_url}{path}: {type(exc).__name__}: {exc}") from None
        return part, got


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _payloads(site: Site, index: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> list[Payload]:
    """The payloads the verified index lists (with each one's chunk table: a Concelier bundle's is in its
    verified manifest, an Excititor artifact's in its index entry)."""
    out: list[Payload] = []
    if site.product == "concelier":
        for i, dom in enumerate(index.get("domains") or []):
            ref = dom.get("bundle") if isinstance(dom, dict) else None
            where = f"{site.index_rel}#/domains/{i}/bundle"
            if not isinstance(ref, dict):
                raise MalformedBundleError(where, "bundle reference must be an object")
            rel = safe_relpath(ref.get("path"), where, "path")
            manifest = manifests.get(str(dom.get("domainId")), {})
            size, digest = _size_digest(ref, where)
            out.append(
                Payload(
                    rel,
                    size,
                    digest,
                    None,
                    list(ref.get("encodings") or []),
                    manifest.get("bundleChunks"),
                )
            )
    else:
        for i, entry in enumerate(index.get("exports") or []):
            where = f"{site.index_rel}#/exports/{i}"
            if not isinstance(entry, dict):
                raise MalformedBundleError(where, "export entry must be an object")
            rel = f"mirror/{site.domain}/" + safe_relpath(entry.get("path"), where, "path")
            key = safe_relpath(entry.get("exportKey"), where, "exportKey")
            size, digest = _size_digest(entry, where)
            out.append(
                Payload(
                    rel,
                    size,
                    digest,
                    key,
                    list(entry.get("encodings") or []),
                    entry.get("chunks"),
                )
            )
    return out


def _size_digest(ref: dict[str, Any], where: str) -> tuple[int, str]:
    size, digest = ref.get("sizeBytes"), ref.get("digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str):
        raise MalformedBundleError(where, "sizeBytes/digest missing or of the wrong type")
    encodings = ref.get("encodings", [])
    if not isinstance(encodings, list) or not all(
        isinstance(e, dict) and isinstance(e.get("sizeBytes"), int) and isinstance(e.get("digest"), str)
        for e in encodings
    ):
        raise MalformedBundleError(where, "encodings must be a list of {encoding, path, sizeBytes, digest}")
    return size, digest


def _local_copies(root: ExportRoot, payload: Payload) -> list[Path]:
    """Earlier copies of this payload in the kept exports, newest first: the same path, and for an Excititor
    artifact any file in its export key's directory (its name may carry the export's date)."""
    found: list[Path] = []
    for export_id in reversed(root.export_ids()):
        base = root.path / export_id
        same = base / payload.rel
        if same.is_file():
            found.append(same)
        elif payload.export_key is not None:
            found += sorted(
                p for p in same.parent.glob("*") if p.is_file() and not p.name.endswith((".jws", ".sig", ".zst"))
            )
    return found


def _obtain(
    fetcher: Fetcher, site: Site, export_id: str, p: Payload, target: Path, copies: list[Path], opts: Options
) -> None:
    """Put the payload at ``target``, verified against its signed digest: reuse, delta, or full download."""
    wire = fetcher.wire
    target.parent.mkdir(parents=True, exist_ok=True)
    for copy in copies:  # trusted by hash, not size
        if copy.stat().st_size == p.size and _sha256_file(copy) == p.digest:
            os.link(copy, target)
            wire.reused_bytes += p.size
            wire.how[p.rel] = "reused"
            return
    url = site.file_url(export_id, p.rel, p.export_key)
    if opts.deltas and p.table is not None and copies:
        try:
            table = chunks.decode(p.table, p.size, p.rel)
            with delta.mapped(copies) as views:
                if delta.plan_from_copies(table, views).fetch_bytes <= delta.WORTH_IT * p.size:
                    stats = delta.rebuild(
                        target, p.digest, table, views, _counted(http_range_reader(fetcher.client, url), wire), p.rel
                    )
                    wire.requests += stats.requests
                    wire.reused_bytes += stats.reused_bytes
                    wire.how[p.rel] = "delta"
                    return
        except (BundleError, SourceError) as exc:
            wire.fallbacks.append(f"{p.rel}: {exc}")
            opts.log(f"delta for {p.rel} refused ({exc}); downloading it whole")
    zstd = next((e for e in p.encodings if e.get("encoding") == "zstd"), None) if opts.compressed else None
    if zstd is not None:
        part, got = fetcher.resumable(url, int(zstd["sizeBytes"]), str(zstd["digest"]), "zstd")
        if got == "zstd":
            _finish_partial(part, int(zstd["sizeBytes"]), str(zstd["digest"]), p.rel + ".zst")
            try:
                delta.decompress_verified(part, target, p.size, p.digest, p.rel)
            finally:
                part.unlink(missing_ok=True)
            wire.how[p.rel] = "compressed"
            return
        part.unlink(missing_ok=True)
    part, _ = fetcher.resumable(url, p.size, p.digest, "identity")
    _finish_partial(part, p.size, p.digest, p.rel)
    os.replace(part, target)
    wire.how[p.rel] = "full"


def _counted(read: delta.RangeReader, wire: Wire) -> delta.RangeReader:
    def counted(start: int, end: int) -> bytes:
        data = read(start, end)
        wire.bytes += len(data)
        return data

    return counted


def _finish_partial(part: Path, size: int, digest: str, where: str) -> None:
    """A completed download must have its signed size and digest; a wrong one is deleted (not resumed)."""
    actual_size = part.stat().st_size
    actual = _sha256_file(part) if actual_size == size else None
    if actual != digest:
        part.unlink(missing_ok=True)
        raise DigestError(where, f"downloaded {actual_size} bytes ({actual}); signed {size} bytes, {digest}")


@dataclass
class PullResult:
    verdict: Verdict | None
    export_id: str
    up_to_date: bool
    wire: Wire


def pull(
    client: httpx.Client, site: Site, out: Path, keys: TrustedKeys, opts: Options, min_sequence: int | None = None
) -> PullResult:
    """Fetch ``site``'s domain into the export root ``out`` (see the module docstring)."""
    if not layout.safe_segment(site.domain):
        raise ConfigError("--domain", f"{site.domain!r} is not a domain id")
    root = ExportRoot(out)
    wire = Wire()
    fetcher = Fetcher(client, out / PARTIAL, wire)
    with root.locked():
        active = root.active_dir()
        if active is not None and active.exists():
            _check_same_domain(active, site)
        local_seq = read_sequence(active) if active is not None and active.exists() else None
        floor = max(s for s in (local_seq, min_sequence, -1) if s is not None)
        floor_arg = floor if floor >= 0 else None
        files, index, head = fetch_index(fetcher, site, keys, floor_arg)
        export_id = check_export_id(head.export_id)
        if active is not None and root.active_id() == export_id:
            verdict = store.verify_export_dir(active, keys, utcnow(), floor_arg)
            return PullResult(verdict, export_id, True, wire)
        with root.staging(export_id, exist_ok=True) as stage:
            stage_files(fetcher, site, files, index, export_id, stage, root, opts)
            verdict = store.verify_export_dir(stage, keys, utcnow(), floor_arg)
            if (root.path / export_id).exists():  # a copy of this export kept but not active: replace it
                root.repair(stage, export_id)
                root.switch(export_id)
            else:
                root.commit(stage, export_id, opts.keep)
        with contextlib.suppress(OSError):
            if fetcher.partial_dir.is_dir() and not any(fetcher.partial_dir.iterdir()):
                fetcher.partial_dir.rmdir()
    return PullResult(verdict, export_id, False, wire)


def _check_same_domain(active: Path, site: Site) -> None:
    """``DIR`` holds one domain: pulling another into it would replace that one (and find no copies to reuse)."""
    if site.product == "excititor":
        held = sorted(p.name for p in (active / "mirror").iterdir() if (p / "index.json").is_file())
    else:
        try:
            doc = orjson.loads((active / site.index_rel).read_bytes())
            held = sorted(str(d.get("domainId")) for d in doc.get("domains", []) if isinstance(d, dict))
        except (OSError, orjson.JSONDecodeError, AttributeError):
            held = []
    if held and held != [site.domain]:
        raise ConfigError("--out", f"{active.parent} holds domain(s) {', '.join(held)}: use one directory per domain")


def fetch_index(
    fetcher: Fetcher, site: Site, keys: TrustedKeys, min_sequence: int | None
) -> tuple[dict[str, bytes], dict[str, Any], Verdict]:
    """Fetch the domain's signed index and its signatures, and verify them (keys, expiry, sequence) before
    anything it lists is fetched."""
    files: dict[str, bytes] = {}
    for suffix, cap in (("", INDEX_CAP), (".jws", SIGNATURE_CAP), (".sig", SIGNATURE_CAP)):
        data = fetcher.small(site.index_url(suffix), cap, optional=suffix == ".sig")
        if data is not None:
            files[site.index_rel + suffix] = data
    index, head = verify_index(_memory_reader(files), site.index_rel, site.product, keys, utcnow(), min_sequence)
    return files, index, head


def stage_files(
    fetcher: Fetcher,
    site: Site,
    files: dict[str, bytes],
    index: dict[str, Any],
    export_id: str,
    stage: Path,
    root: ExportRoot | None,
    opts: Options,
) -> None:
    """Write the verified index into ``stage`` and fetch every file it lists there (payloads reused, rebuilt
    by delta against ``root``'s kept copies, or downloaded); the caller verifies the staged tree."""
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    manifests = _fetch_manifests(fetcher, site, index, export_id, stage)
    for p in _payloads(site, index, manifests):
        target = stage / p.rel
        _obtain(fetcher, site, export_id, p, target, _local_copies(root, p) if root else [], opts)
        for suffix in (".jws", ".sig"):
            sig = fetcher.small(site.file_url(export_id, p.rel, p.export_key, suffix), SIGNATURE_CAP)
            assert sig is not None
            target.with_name(target.name + suffix).write_bytes(sig)


def _fetch_manifests(
    fetcher: Fetcher, site: Site, index: dict[str, Any], export_id: str, stage: Path
) -> dict[str, dict[str, Any]]:
    """Concelier: each listed domain's manifest, checked against its signed size and digest before it is parsed
    (its chunk table steers the delta)."""
    if site.product != "concelier":
        return {}
    manifests: dict[str, dict[str, Any]] = {}
    for i, dom in enumerate(index.get("domains") or []):
        where = f"{site.index_rel}#/domains/{i}/manifest"
        ref = dom.get("manifest") if isinstance(dom, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("sizeBytes"), int):
            raise MalformedBundleError(where, "manifest reference must be an object with sizeBytes")
        rel = safe_relpath(ref.get("path"), where, "path")
        data = fetcher.small(site.file_url(export_id, rel, None), int(ref["sizeBytes"]))
        assert data is not None
        if "sha256:" + hashlib.sha256(data).hexdigest() != ref.get("digest"):
            raise DigestError(rel, "manifest digest differs from the signed index")
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
        manifests[str(dom.get("domainId"))] = orjson.loads(data)
    return manifests


def _memory_reader(files: dict[str, bytes]) -> Callable[[str], bytes]:
    def read(rel: str) -> bytes:
        try:
            return files[rel]
        except KeyError:
            raise FileNotFoundError(rel) from None

    return read
