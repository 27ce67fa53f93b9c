"""Small file helpers: atomic writes and signing a file in place.

Writers commit only on success: content goes to a temporary name in the same directory, is fsynced,
then renamed over the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stella_mirror.bundle.digest import HashingWriter, sha256_bytes
from stella_mirror.bundle.model import FileRef, SignatureRef
from stella_mirror.bundle.signing import SigningKey


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> FileRef:
    """Write ``data`` to ``path`` atomically and return its size and digest."""
    with open_atomic(path, mode) as fh:
        fh.write(data)
    return FileRef(path=path.name, sizeBytes=len(data), digest=sha256_bytes(data))


@contextlib.contextmanager
def open_atomic(path: Path, mode: int = 0o644) -> Iterator[HashingWriter]:
    """Open a hashing writer on a temp file that replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as raw:
            writer = HashingWriter(raw)
            yield writer
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def sign_file(key: SigningKey, path: Path, ref_base: str = "") -> SignatureRef:
    """Write ``<path>.jws`` (detached, unencoded payload) and ``<path>.sig`` for an existing file.

    ``ref_base`` is the directory prefix used for the returned signature path (paths in signed
    metadata are relative to the export directory).
    """
    # Read in chunks rather than through a mapping: mapped pages count as the process's resident memory,
    # which would make an exporter's RSS grow with the size of the bundle it signs.
    jws, sig = key.sign_jws_and_blob(_chunks(path))
    jws_path = path.with_name(path.name + ".jws")
    write_atomic(jws_path, jws)
    write_atomic(path.with_name(path.name + ".sig"), sig)
    return SignatureRef(path=ref_base + jws_path.name, algorithm=key.alg, keyId=key.kid)


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames inside it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
