"""``file://DIR`` (or a plain directory path): an export directory, or an export root whose ``latest`` is read once.

Reading an export root pins the export ``latest`` names when the source is first used, so a publish that
switches it during the sync cannot mix two exports. The probe is the size, mtime and inode of the index
files (and the export ``latest`` names).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from stella_mirror.bundle.layout import LATEST, index_paths, local_index_names
from stella_mirror.errors import SourceError, UnreachableError
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.sources.interface import CHUNK, Body, StreamSource, Want


def read_chunks(fh: IO[bytes], limit: int) -> Iterator[bytes]:
    """At most ``limit`` bytes from ``fh``'s position, a chunk at a time."""
    left = limit
    while left > 0 and (chunk := fh.read(min(CHUNK, left))):
        left -= len(chunk)
        yield chunk


class FileSource(StreamSource):
    def __init__(self, path: Path, url: str, options: SourceOptions | None = None) -> None:
        self.url = url
        self.root = path
        if options is not None:
            self.timeout, self.min_rate = options.timeout_seconds, options.min_bytes_per_second
        self._dir: Path | None = None

    def export_dir(self) -> Path:
        """The export directory: the path itself, or what its ``latest`` names (resolved once)."""
        if self._dir is None:
            latest = self.root / LATEST
            if latest.is_symlink():
                self._dir = self.root / os.readlink(latest).rstrip("/").split("/")[-1]
            elif self.root.is_dir():
                self._dir = self.root
            else:
                raise UnreachableError(f"{self.url}: not a directory")
        return self._dir

    def index_files(self, kind: str) -> dict[str, bytes]:
        return self.read_indexes(index_paths(kind, local_index_names(self.export_dir())))

    def open(self, want: Want, offset: int) -> Body | None:
        rel, limit = want.rel, want.max_size + 1 - offset
        path = self.export_dir() / rel
        if offset == 0 and want.local is not None and _same_bytes(path, want.local):
            return None
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise  # the file is absent
        except OSError as exc:
            raise SourceError(f"{self.url}: {rel}: {exc.strerror}") from exc
        size = os.fstat(fh.fileno()).st_size
        fh.seek(offset)
        return Body(read_chunks(fh, limit), max(0, size - offset), fh.close)

    def probe(self, kind: str, previous: str | None) -> str:
        self._dir = None  # a probe looks at what latest names now
        try:
            export = self.export_dir()
            parts = [export.name]
            for rel in index_paths(kind, local_index_names(self.export_dir())):
                st = (export / rel).stat()
                parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
        except OSError as exc:
            raise UnreachableError(f"{self.url}: {exc.strerror}") from exc
        finally:
            self._dir = None
        return "|".join(parts)


def _same_bytes(path: Path, local: Path) -> bool:
    """Byte-for-byte equal (sizes first); only asked about small files (signatures)."""
    try:
        return path.stat().st_size == local.stat().st_size and path.read_bytes() == local.read_bytes()
    except OSError:
        return False
