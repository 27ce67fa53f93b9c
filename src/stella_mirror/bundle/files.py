"""Small file helpers: atomic writes and signing a file in place.

Writers commit only on success: content goes to a temporary name in the same directory, is fsynced,
then renamed over the final name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from stella_mirror.bundle.digest import HashingWriter, sha256_bytes
from stella_mirror.bundle.model import FileRef, SignatureRef
from stella_mirror.bundle.signing import SigningKey, _signing_input_prefix, b64url

_W = TypeVar("_W", bound=HashingWriter)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> FileRef:
    """Write ``data`` to ``path`` atomically and return its size and digest."""
    with open_atomic(path, mode) as fh:
        fh.write(data)
    return FileRef(path=path.name, sizeBytes=len(data), digest=sha256_bytes(data))


@contextlib.contextmanager
def open_atomic(path: Path, mode: int = 0o644) -> Iterator[HashingWriter]:
    """Open a hashing writer on a temp file that replaces ``path`` only if the block succeeds."""
    with _open_atomic(path, HashingWriter, mode) as writer:
        yield writer


class SigningWriter(HashingWriter):
    """A :class:`HashingWriter` that, for an ES256 key, also hashes the JWS signing input as bytes pass.

    The ``.sig`` signs the SHA-256 of the file (the digest this writer computes anyway) and the JWS
    signs the SHA-256 of ``BASE64URL(header) || "." || file``; with both hashes ready when the file is
    complete, :func:`open_signed` signs without reading the file again.
    """

    def __init__(self, raw: IO[bytes], key: SigningKey) -> None:
        super().__init__(raw)
        self.key = key
        self.signature: SignatureRef | None = None
        self._prefix = _signing_input_prefix(key.jws_header())
        self._jws = hashlib.sha256(self._prefix) if isinstance(key.private, ec.EllipticCurvePrivateKey) else None

    def write(self, data: bytes) -> int:
        if self._jws is not None:
            self._jws.update(data)
        return super().write(data)

    def _sign(self, path: Path, ref_base: str) -> SignatureRef:
        private = self.key.private
        if self._jws is None or not isinstance(private, ec.EllipticCurvePrivateKey):
            return sign_file(self.key, path, ref_base)  # Ed25519 signs the whole message: read it back
        algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
        r, s = decode_dss_signature(private.sign(self._jws.digest(), algorithm))
        jws = self._prefix + b"." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")).encode("ascii")
        sig = base64.b64encode(private.sign(self.raw_digest(), algorithm)) + b"\n"
        return _write_signatures(self.key, path, ref_base, jws, sig)


@contextlib.contextmanager
def open_signed(path: Path, key: SigningKey, ref_base: str = "", mode: int = 0o644) -> Iterator[SigningWriter]:
    """:func:`open_atomic`, then what :func:`sign_file` writes; the writer's ``signature`` is set on exit."""
    with _open_atomic(path, lambda raw: SigningWriter(raw, key), mode) as writer:
        yield writer
    writer.signature = writer._sign(path, ref_base)


@contextlib.contextmanager
def _open_atomic(path: Path, make: Callable[[IO[bytes]], _W], mode: int) -> Iterator[_W]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as raw:
            writer = make(raw)
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
    return _write_signatures(key, path, ref_base, jws, sig)


def _write_signatures(key: SigningKey, path: Path, ref_base: str, jws: bytes, sig: bytes) -> SignatureRef:
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
