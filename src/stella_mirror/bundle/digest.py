"""SHA-256 digests in the ``sha256:<hex>`` form used throughout the formats."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Protocol

from typing_extensions import Buffer

PREFIX = "sha256:"
_CHUNK = 1 << 20


def sha256_bytes(data: Buffer) -> str:
    """Digest of bytes (or any buffer, e.g. an mmap) as ``sha256:<hex>``."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    """Digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return PREFIX + h.hexdigest(), size


def parse(digest: str) -> str:
    """Return the hex part of a ``sha256:<hex>`` digest; raise ValueError on anything else."""
    if not digest.startswith(PREFIX):
        raise ValueError(f"digest must start with {PREFIX!r}")
    hexpart = digest[len(PREFIX) :]
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError("digest must be 64 lowercase hex digits")
    return hexpart


class Writable(Protocol):
    """Anything bytes can be written to (a file, a HashingWriter, a BytesIO)."""

    def write(self, data: bytes, /) -> int: ...


class HashingWriter:
    """A binary writer that hashes and counts everything written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._h.update(data)
        self.size += len(data)
        return self._raw.write(data)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of everything written so far."""
        return PREFIX + self._h.hexdigest()
