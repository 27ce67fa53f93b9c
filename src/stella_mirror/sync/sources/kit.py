"""An offline kit (``KIT.tar``, see ``sync/kit.py``) as a source: the export inside it, read member by member.

Only members named by the signed indexes are read (``export/<path>``), never extracted by the tar's own
names. Before anything is imported the whole kit is checked against its ``kit.json`` (every member's size
and SHA-256, the product kind), so one flipped byte anywhere in the kit's files refuses it; the export's
own signatures are then verified against the *pinned* keys as for any source — the keys in the kit are
never trusted by the import. The probe is the tarball's size and mtime.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import IO, Any

import orjson

from stella_mirror.bundle.layout import index_paths
from stella_mirror.bundle.trusted import TrustedIndexSet
from stella_mirror.errors import DigestError, MalformedBundleError, SourceError, TruncatedError, UnreachableError
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.kit import EXPORT, MANIFEST
from stella_mirror.sync.sources.file import read_chunks
from stella_mirror.sync.sources.interface import INDEX_CAP, Body, StreamSource, Want


class KitSource(StreamSource):
    parallel = 1  # members are read through one shared file object

    def __init__(self, path: Path, url: str, options: SourceOptions | None = None) -> None:
        self.url = url
        self.path = path
        if options is not None:
            self.timeout, self.min_rate = options.timeout_seconds, options.min_bytes_per_second
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        self._manifest: dict[str, Any] = {}

    def _open(self, kind: str) -> tarfile.TarFile:
        if self._tar is None:
            try:
                size = self.path.stat().st_size
                tar = tarfile.open(self.path, mode="r:")  # noqa: SIM115 - open for the run; close() closes it
                infos = tar.getmembers()
            except tarfile.ReadError as exc:
                if "unexpected end" in str(exc):
                    raise TruncatedError(f"{self.url}: the kit is truncated ({exc})") from None
                raise MalformedBundleError(self.url, f"not a readable offline kit (tar): {exc}") from None
            except (OSError, tarfile.TarError) as exc:
                raise MalformedBundleError(self.url, f"not a readable offline kit (tar): {exc}") from None
            members = {}
            for m in infos:
                if m.issparse():  # its declared size is not data in the archive: refused before any hashing
                    tar.close()
                    raise MalformedBundleError(m.name, "a sparse member: an offline kit holds plain files only")
                if m.isfile() and m.offset_data + m.size > size:
                    tar.close()
                    raise TruncatedError(f"{self.url}: {m.name} ends past the end of the kit (a truncated kit)")
                if m.isfile():
                    members[m.name] = m
            self._tar, self._members = tar, members
            self._check(kind)
        return self._tar

    def _member(self, name: str) -> IO[bytes]:
        assert self._tar is not None
        fh = self._tar.extractfile(self._members[name])
        if fh is None:
            raise FileNotFoundError(name)
        return fh

    def _check(self, kind: str) -> None:
        """Every file the kit's manifest lists is there with its size and digest; the kind is ``kind``."""
        if MANIFEST not in self._members or self._members[MANIFEST].size > INDEX_CAP:
            raise MalformedBundleError(MANIFEST, "the kit has no usable manifest")
        try:
            manifest: Any = orjson.loads(self._member(MANIFEST).read())
            files = [(str(f["path"]), int(f["sizeBytes"]), str(f["digest"])) for f in manifest["files"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise MalformedBundleError(MANIFEST, "not a kit manifest") from None
        self._manifest = manifest if isinstance(manifest, dict) else {}
        if manifest.get("kind") != kind:
            claimed = manifest.get("kind")
            raise MalformedBundleError(MANIFEST, f"claims a {claimed} export, not {kind} (an unsigned claim)")
        for name, size, digest in files:
            info = self._members.get(name)
            if info is None or info.size != size:
                raise DigestError(name, "missing from the kit, or not the size its manifest says")
            h = hashlib.sha256()
            for chunk in read_chunks(self._member(name), size):
                h.update(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise DigestError(name, "differs from the digest in the kit's manifest")

    def confirm(self, trust: TrustedIndexSet) -> None:
        """The kit's manifest describes the export whose signed index was accepted (not another one's)."""
        trust.check_kit_manifest(self._manifest)

    def probe(self, kind: str, previous: str | None) -> str:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise UnreachableError(f"{self.url}: {exc.strerror}") from None
        self.close()  # a probe starts a run: the kit is opened (and checked) afresh
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def index_files(self, kind: str) -> dict[str, bytes]:
        self._open(kind)
        return self.read_indexes(index_paths(kind, [n[len(EXPORT) :] for n in self._members if n.startswith(EXPORT)]))

    def open(self, want: Want, offset: int) -> Body | None:
        if self._tar is None:
            raise SourceError(f"{self.url}: read before its index")
        name = EXPORT + want.rel
        if name not in self._members:
            raise FileNotFoundError(want.rel)
        fh = self._member(name)
        fh.seek(offset)
        return Body(read_chunks(fh, want.max_size + 1 - offset), max(0, self._members[name].size - offset))

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
