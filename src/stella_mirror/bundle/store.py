"""The file-system side of verification: open an export directory and hand its bytes to ``verify``.

Files are memory-mapped, so verifying a multi-GB bundle costs page cache, not heap. Paths are
resolved inside the export directory only; a symlink that leaves it is refused.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from datetime import datetime
from pathlib import Path

from typing_extensions import Buffer

from stella_mirror.bundle import layout, verify
from stella_mirror.bundle.layout import LATEST
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.errors import MalformedBundleError


class DirectoryReader(contextlib.AbstractContextManager["DirectoryReader"]):
    """A :data:`verify.Reader` over one export directory; close it to release the mappings."""

    def __init__(self, export_dir: Path) -> None:
        self.root = export_dir.resolve()
        self._maps: list[mmap.mmap] = []
        self._views: list[memoryview] = []

    def __call__(self, rel: str) -> Buffer:
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root):
            raise MalformedBundleError(rel, "path resolves outside the export directory")
        with target.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return b""
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mm)
        view = memoryview(mm)
        self._views.append(view)
        return view

    def close(self) -> None:
        for v in self._views:
            v.release()
        for m in self._maps:
            m.close()
        self._views.clear()
        self._maps.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_export_dir(path: Path) -> Path:
    """An export root resolves to its ``latest``; an export directory is itself."""
    if (path / LATEST).exists():
        return (path / LATEST).resolve()
    if (path / "mirror").is_dir():
        return path
    raise MalformedBundleError(str(path), "neither an export root (with latest) nor an export directory (with mirror/)")


def detect_product(export_dir: Path) -> tuple[str, list[str]]:
    """``("concelier", [])`` or ``("excititor", [domain ids])`` from the tree's shape."""
    mirror = export_dir / "mirror"
    if (mirror / "index.json").is_file():
        return "concelier", []
    domains = sorted(p.name for p in mirror.iterdir() if (p / "index.json").is_file()) if mirror.is_dir() else []
    if domains:
        return "excititor", domains
    raise MalformedBundleError(
        str(export_dir), "no mirror/index.json (Concelier) or mirror/<domain>/index.json (Excititor)"
    )


def verify_export_dir(
    export_dir: Path, keys: TrustedKeys, now: datetime, min_sequence: int | None = None
) -> verify.Verdict:
    """Verify one export directory of either product."""
    product, domains = detect_product(export_dir)
    with DirectoryReader(export_dir) as reader:
        if product == "concelier":
            return verify.verify_concelier(reader, keys, now, min_sequence)
        return verify.verify_excititor(reader, domains, keys, now, min_sequence)


def verify_path(path: Path, keys: TrustedKeys, now: datetime, min_sequence: int | None = None) -> verify.Verdict:
    """Verify an export root (its active export) or an export directory."""
    return verify_export_dir(resolve_export_dir(path), keys, now, min_sequence)


def damaged_files(export_dir: Path) -> list[str]:
    """Every file the export's indexes list whose size or SHA-256 differs from its listed ones (or that is
    missing) — what ``verify`` names after a digest failure, so one run shows all the damage, not the first.
    The indexes are read as they are: run after their signatures verified, or treat the answer as a hint."""
    import hashlib

    import orjson

    docs = {}
    for rel in layout.index_paths(detect_product(export_dir)[0], layout.local_index_names(export_dir)):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            doc = orjson.loads((export_dir / rel).read_bytes())
            if isinstance(doc, dict):
                docs[rel] = doc
    out = []
    for item in layout.listed_files(docs):
        path = export_dir / item.rel
        try:
            if path.is_symlink() or path.stat().st_size != item.size:
                raise OSError
            h = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            if "sha256:" + h.hexdigest() != item.digest:
                raise OSError
        except OSError:
            if not (item.optional and not path.exists()):
                out.append(item.rel)
    return out
