"""SHA-256 digests in the ``sha256:<hex>`` form used throughout the formats."""

from __future__ import annotations

import hashlib
from typing import IO, Protocol

from typing_extensions import Buffer

PREFIX = "sha256:"


def sha256_bytes(data: Buffer) -> str:
    """Digest of bytes (or any buffer, e.g. an mmap) as ``sha256:<hex>``."""
    return PREFIX + hashlib.sha256(data).hexdigest()


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

    def raw_digest(self) -> bytes:
        """The SHA-256 of everything written so far, as 32 bytes."""
        return self._h.digest()

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of everything written so far."""
        return PREFIX + self._h.hexdigest()
