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
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from stella_mirror.bundle.atomic import atomic_file
from stella_mirror.bundle.atomic import fsync_dir as fsync_dir  # re-exported: owned by bundle.atomic
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


class _Lane:
    """A thread that applies one function to queued blocks, in order; at most ``depth`` blocks wait.

    The first failure is kept (later blocks are skipped) and raised by :meth:`check`/:meth:`drain`.
    """

    def __init__(self, apply: Callable[[bytes], object], name: str, depth: int) -> None:
        self._apply = apply
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._apply(data)
                except BaseException as exc:  # raised in the writing thread by check()
                    self.error = exc
            self._queue.task_done()
        self._queue.task_done()

    def put(self, data: bytes) -> None:
        self._queue.put(data)

    def offer(self, data: bytes) -> bool:
        """:meth:`put` unless the queue is full (then nothing happens): False."""
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            return False
        return True

    def drain(self) -> None:
        """Wait until every queued block has been applied."""
        self._queue.join()

    def stop(self) -> None:
        """Apply what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()


class SigningWriter(HashingWriter):
    """A :class:`HashingWriter` that, for an ES256 key, also hashes the JWS signing input as bytes pass.

    The ``.sig`` signs the SHA-256 of the file (the digest this writer computes anyway) and the JWS
    signs the SHA-256 of ``BASE64URL(header) || "." || file``; with both hashes ready when the file is
    complete, :func:`open_signed` signs without reading the file again.

    Large blocks (bundles arrive in runs of megabytes) are handled by two background threads, in
    order, while the caller prepares the next block: one hashes the JWS signing input, the other
    hashes the file and writes it. hashlib and file writes release the GIL on large buffers, so on a
    machine with spare cores the two SHA-256 passes and the copy into the page cache run beside the
    exporter's own work. Small writes are gathered into a block of their own, so the threads never
    wait for each other. At most ``_DEPTH`` blocks wait per thread, so memory stays bounded; the
    first failure is raised by the next ``write`` or by ``finish``. A third thread asks the kernel to
    write the file to disk every ``_SYNC_EVERY`` bytes (``fdatasync``), so that the ``fsync`` before
    the rename finds little left to do, and then to reuse the pages already written (see
    :meth:`_write_back`).
    """

    _DEPTH = 3
    _BACKGROUND_MIN = 1 << 16  # smaller writes are gathered until they make a block of this size
    _SYNC_EVERY = 32 << 20

    def __init__(self, raw: IO[bytes], key: SigningKey) -> None:
        super().__init__(raw)
        self.key = key
        self.signature: SignatureRef | None = None
        self._prefix = _signing_input_prefix(key.jws_header())
        self._jws = hashlib.sha256(self._prefix) if isinstance(key.private, ec.EllipticCurvePrivateKey) else None
        self._lanes: list[_Lane] = []
        self._sync: _Lane | None = None
        self._unsynced = 0
        self._small = bytearray()
        self._failure: BaseException | None = None  # of a lane already stopped

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        for lane in (*self._lanes, *([self._sync] if self._sync else [])):
            if lane.error is not None:
                raise lane.error

    def _apply(self, data: bytes) -> None:
        """Hash and write one block on the spot (no threads started yet: a small file)."""
        if self._jws is not None:
            self._jws.update(data)
        HashingWriter.write(self, data)

    def _write_file(self, data: bytes) -> None:
        """The file thread: hash and write a block; now and then ask for it to be written to disk."""
        HashingWriter.write(self, data)
        self._unsynced += len(data)
        if self._unsynced >= self._SYNC_EVERY and self._sync is not None:
            self._raw.flush()
            if self._sync.offer(b"%d" % self.size):
                self._unsynced = 0

    def _write_back(self, upto: bytes) -> None:
        """The sync thread: write the file out up to ``upto`` bytes, then let the kernel reuse those pages.

        Nothing reads the bundle back (its hashes are taken while it is written), and on a virtual
        machine new page-cache pages are what makes writing a large file slow: pages already on disk
        are handed back for the rest of the file.
        """
        fd = self._raw.fileno()
        getattr(os, "fdatasync", os.fsync)(fd)
        if hasattr(os, "posix_fadvise"):  # not on macOS
            os.posix_fadvise(fd, 0, int(upto), os.POSIX_FADV_DONTNEED)

    def _start(self) -> None:
        self._lanes.append(_Lane(self._write_file, "bundle-file", self._DEPTH))
        if self._jws is not None:
            self._lanes.append(_Lane(self._jws.update, "bundle-jws", self._DEPTH))
        self._sync = _Lane(self._write_back, "bundle-sync", 1)

    def _put(self, data: bytes) -> None:
        if not self._lanes:
            self._start()
        for lane in self._lanes:
            lane.put(data)

    def _take_small(self) -> bytes:
        block = bytes(self._small)
        self._small.clear()
        return block

    def _flush_small(self) -> None:
        """The gathered small writes as a block: queued, or applied here while no thread runs yet."""
        if self._small:
            (self._put if self._lanes else self._apply)(self._take_small())

    def _drain(self) -> None:
        self._flush_small()
        for lane in self._lanes:
            lane.drain()
        self._check()

    def write(self, data: bytes) -> int:
        self._check()
        if len(data) < self._BACKGROUND_MIN:
            self._small += data
            if len(self._small) >= self._BACKGROUND_MIN:
                self._put(self._take_small())
            return len(data)
        self._flush_small()
        self._put(data)
        return len(data)

    def finish(self) -> None:
        """Wait for every block to be hashed and written; stop the threads (raises the first failure)."""
        self._flush_small()
        self._stop()
        self._check()

    def abort(self) -> None:
        """Stop the threads after what is queued (the file is being abandoned: failures are not raised)."""
        self._small.clear()
        self._stop()

    def _stop(self) -> None:
        lanes = [*self._lanes, *([self._sync] if self._sync else [])]
        for lane in lanes:  # the file thread first: it may still offer work to the sync thread
            lane.stop()
        if self._failure is None:
            self._failure = next((lane.error for lane in lanes if lane.error is not None), None)
        self._lanes, self._sync = [], None

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
    with atomic_file(path, mode, sync_dir=False) as raw:  # the export's publish makes its tree durable
        yield make(raw)


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
