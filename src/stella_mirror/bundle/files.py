"""Small file helpers: atomic writes and signing a file in place.

Writers commit only on success: content goes to a temporary name in the same directory, is fsynced,
then renamed over the final name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import queue
import tempfile
import threading
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

    Writes of large blocks (bundles arrive in runs of megabytes) are hashed twice and written by a
    background thread, in order, while the caller prepares the next block: hashlib and file writes
    release the GIL on large buffers, so on a machine with a spare core the two SHA-256 passes and
    the copy into the page cache overlap the exporter's own work. At most ``_DEPTH`` blocks wait, so
    memory stays bounded; the first failure is raised by the next ``write`` or by ``finish``.
    """

    _DEPTH = 3
    _BACKGROUND_MIN = 1 << 16  # smaller writes are done on the spot (after the queue has drained)

    def __init__(self, raw: IO[bytes], key: SigningKey) -> None:
        super().__init__(raw)
        self.key = key
        self.signature: SignatureRef | None = None
        self._prefix = _signing_input_prefix(key.jws_header())
        self._jws = hashlib.sha256(self._prefix) if isinstance(key.private, ec.EllipticCurvePrivateKey) else None
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _apply(self, data: bytes) -> None:
        if self._jws is not None:
            self._jws.update(data)
        HashingWriter.write(self, data)

    def _run(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._apply(data)
                except BaseException as exc:  # handed to the writing thread
                    self._error = exc
            self._queue.task_done()
        self._queue.task_done()

    def _drain(self) -> None:
        if self._queue is not None:
            self._queue.join()
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> int:
        if len(data) < self._BACKGROUND_MIN:
            self._drain()
            self._apply(data)
            return len(data)
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._queue = queue.Queue(self._DEPTH)
            self._thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
            self._thread.start()
        self._queue.put(data)
        return len(data)

    def finish(self) -> None:
        """Wait for every block to be hashed and written; stop the thread (raises its first failure)."""
        self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the thread after what is queued (the file is being abandoned: failures are not raised)."""
        self._stop()

    def _stop(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            assert self._thread is not None
            self._thread.join()
            self._queue = self._thread = None

    def raw_digest(self) -> bytes:
        self._drain()
        return super().raw_digest()

    @property
    def digest(self) -> str:
        self._drain()
        return super().digest

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
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish()  # every block hashed and written before the file is flushed and renamed
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
