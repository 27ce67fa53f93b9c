"""The one small interface every sync source implements, and the transfer loop they share.

A source is a remote *export directory* (the tree ``export`` writes: ``mirror/index.json`` for Concelier,
``mirror/<domain>/index.json`` for Excititor, and what those indexes list), addressed by paths relative to
it. The job (``sync/job.py``) asks a source for three things only:

* :meth:`Source.index_files` — the signed index file(s), bytes in memory (capped at :data:`INDEX_CAP`);
* :meth:`Source.fetch` — a batch of files into the staging directory, each with a size cap: the size the
  signed index gives, or :data:`SIGNATURE_CAP` for a detached signature; never a byte more is read;
* :meth:`Source.probe` — a cheap, conditional "has the index changed?" token (ETag, size+mtime, listing).

Paths come only from signed indexes the job has parsed (``bundle.verify.safe_relpath``), never from a
source's own listing. Sources raise :class:`FileNotFoundError` for a missing file and
:class:`~stella_mirror.errors.SourceError` subclasses for everything else; transient ones
(unreachable, truncated, 5xx) are retried here with backoff, resuming where the bytes stopped.

Most sources stream one file at a time (:class:`StreamSource`: S3, HTTPS, directories, kits); rsync
transfers a batch in one run of the real ``rsync`` program and overrides :meth:`Source.fetch`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stella_mirror.bundle.atomic import atomic_file
from stella_mirror.errors import DigestError, MissingAtSourceError, SourceError, StalledError, TruncatedError
from stella_mirror.sync.retry import with_retries

if TYPE_CHECKING:
    from stella_mirror.bundle.trusted import TrustedIndexSet

INDEX_CAP = 64 << 20
"""The most a signed index may weigh: nothing signed gives its size, so this bounds the read."""
SIGNATURE_CAP = 64 << 10
"""The most a detached ``.jws`` or ``.sig`` may weigh (they are a few hundred bytes)."""
CHUNK = 1 << 20
MIN_RATE = 64 << 10
"""Default minimum throughput (bytes/s) a transfer must keep after its grace period (``timeoutSeconds``)."""


@dataclass(frozen=True)
class Want:
    """One file the job needs in its staging directory."""

    rel: str
    max_size: int
    """Never read more than this: the signed size, or a cap for files the index gives no size for."""
    digest: str | None = None
    """``sha256:<hex>`` from the signed index (payloads), None for signatures."""
    local: Path | None = None
    """The served export's file at the same path: a source may use it instead of transferring bytes it can
    show are identical (an S3 ETag, an HTTP ``If-None-Match`` answered 304, rsync's own check)."""
    optional: bool = False
    """Absent at the source is fine (the index's ``.sig``)."""


@dataclass
class Pace:
    """The deadline of one transfer: after a grace of ``timeout`` seconds, at least ``rate`` bytes a second —
    so a file of a signed size must arrive within ``timeout + size / rate`` — and never past the run's
    deadline. A source that drips bytes (each read returning just in time for its socket timeout) fails here,
    as a :class:`StalledError` (not retried: a stalled source stalls again)."""

    what: str
    timeout: float
    rate: int
    run_deadline: float | None = None
    start: float = field(default_factory=time.monotonic)

    def check(self, received: int) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed > self.timeout + received / self.rate:
            raise StalledError(f"{self.what}: {received} bytes in {elapsed:.1f} s, below the minimum of "
                               f"{self.rate} bytes/s after {self.timeout:g} s")
        if self.run_deadline is not None and now > self.run_deadline:
            raise StalledError(f"{self.what}: the run passed its deadline")

    def seconds_for(self, size: int) -> float:
        """How long a transfer of ``size`` bytes may take in all (bounded by the run's deadline)."""
        allowed = self.timeout + size / self.rate
        if self.run_deadline is not None:
            allowed = min(allowed, max(0.0, self.run_deadline - time.monotonic()))
        return allowed


@dataclass
class FetchStats:
    files_fetched: int = 0
    bytes_fetched: int = 0
    files_reused: int = 0
    bytes_reused: int = 0


@dataclass
class Progress:
    """Callbacks for a progress display; both optional."""

    advance: Callable[[int], None] = field(default=lambda n: None)
    retry: Callable[[str, SourceError, int], None] = field(default=lambda rel, exc, attempt: None)


class Source(ABC):
    """A remote export directory."""

    url: str
    """The source URL with credentials and query removed: safe to log and record."""
    timeout: float = 60.0
    """Seconds a single read may wait (and the grace period of every transfer's :class:`Pace`)."""
    min_rate: int = MIN_RATE
    run_deadline: float | None = None
    """``time.monotonic()`` past which the current run fails (set by :meth:`begin`)."""

    def begin(self, run_seconds: float | None) -> None:
        """A run starts: it must end within ``run_seconds`` (None: no run deadline)."""
        self.run_deadline = None if run_seconds is None else time.monotonic() + run_seconds

    def pace(self, what: str) -> Pace:
        return Pace(f"{self.url}: {what}", self.timeout, self.min_rate, self.run_deadline)

    def small_files(self, rels: Sequence[str], max_size: int) -> dict[str, bytes]:
        """Small files (an index's signatures) in memory, never written anywhere: those the source has,
        each at most ``max_size`` bytes. Read before an index is trusted, so nothing lands in the export root."""
        raise NotImplementedError

    def confirm(self, trust: TrustedIndexSet) -> None:  # noqa: B027 - only kits carry claims of their own
        """Check what the source itself claims (a kit's manifest) against the accepted index."""

    @abstractmethod
    def index_files(self, kind: str) -> dict[str, bytes]:
        """The signed index file(s) of the export (without their signatures), by relative path."""

    @abstractmethod
    def fetch(self, wants: Sequence[Want], stage: Path, partial: Path, progress: Progress) -> FetchStats:
        """Put every wanted file at ``stage / rel`` (optional ones may be skipped when absent).

        ``partial`` is a directory on the same file system that survives a failed run: interrupted
        downloads wait there to be resumed.
        """

    @abstractmethod
    def probe(self, kind: str, previous: str | None) -> str:
        """A token that changes when the upstream index changes, obtained with one cheap request.

        Every run calls it first: a source drops here what it cached during the previous run (a listing,
        the export it pinned)."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing
        """Release connections."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Body:
    """An open remote file: chunks from ``start`` on, and what the source announced."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        remaining: int | None,
        close: Callable[[], None] = lambda: None,
        start: int | None = None,
    ) -> None:
        self.chunks = chunks
        self.remaining = remaining
        """Bytes the source said it would send (None: unknown)."""
        self.close = close
        self.start = start
        """Where the chunks start: the offset asked for (None), or 0 when the source sent the whole file."""


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` at ``dest`` (a copy where links are impossible: another file system, link limit)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        with src.open("rb") as fin, atomic_file(dest) as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)


def partial_name(want: Want) -> str:
    """Where an interrupted download of ``want`` waits: by path and signed digest, so a resumed download is
    of the same bytes, and two files of one batch never share it."""
    name = hashlib.sha256(want.rel.encode()).hexdigest()[:32]
    return f"{name}-{want.digest.removeprefix('sha256:')}" if want.digest is not None else name


class StreamSource(Source):
    """A source read one file at a time; :meth:`open` is all a subclass provides besides listing."""

    @abstractmethod
    def open(self, want: Want, offset: int) -> Body | None:
        """Open ``want.rel`` from byte ``offset``, asking for no more than ``want.max_size + 1 - offset`` bytes
        (one more than allowed, so a file that is too large shows itself).

        When ``offset`` is 0 and ``want.local`` is given, returns None if the source shows the local file is
        identical (nothing is transferred). Raises FileNotFoundError when the file is absent.
        """

    def read_indexes(self, rels: Sequence[str]) -> dict[str, bytes]:
        """The index files among ``rels`` that the source has (each at most :data:`INDEX_CAP` bytes)."""
        found = {rel: self.read(rel, INDEX_CAP) for rel in rels}
        return {rel: data for rel, data in found.items() if data is not None}

    def small_files(self, rels: Sequence[str], max_size: int) -> dict[str, bytes]:
        found = {rel: self.read(rel, max_size) for rel in rels}
        return {rel: data for rel, data in found.items() if data is not None}

    def read(self, rel: str, max_size: int) -> bytes | None:
        """A small file in memory (None when absent), at most ``max_size`` bytes."""

        def once() -> bytes | None:
            try:
                body = self.open(Want(rel, max_size), 0)
            except FileNotFoundError:
                return None
            assert body is not None
            data = bytearray()
            pace = self.pace(rel)
            try:
                for chunk in body.chunks:
                    data += chunk
                    if len(data) > max_size:
                        raise DigestError(rel, f"larger than the {max_size} bytes allowed")
                    pace.check(len(data))
            finally:
                body.close()
            if body.remaining is not None and len(data) < min(body.remaining, max_size):
                raise TruncatedError(f"{rel}: the transfer ended after {len(data)} of {body.remaining} bytes")
            return bytes(data)

        return with_retries(once)

    parallel = 4
    """Files transferred at once: a few requests in flight hide the round trips (``aws s3 sync`` runs ten)."""

    def fetch(self, wants: Sequence[Want], stage: Path, partial: Path, progress: Progress) -> FetchStats:
        partial.mkdir(parents=True, exist_ok=True)
        stats = FetchStats()
        lock = threading.Lock()

        def one(want: Want) -> None:
            received = self._fetch_one(want, stage, partial, progress)
            with lock:
                if received == -1:  # the local candidate was the same: linked
                    stats.files_reused += 1
                    stats.bytes_reused += (stage / want.rel).stat().st_size
                elif received is not None:
                    stats.files_fetched += 1
                    stats.bytes_fetched += received  # what crossed the network (not a resumed part)

        if self.parallel <= 1 or len(wants) <= 1:
            for want in wants:
                one(want)
            return stats
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="sync-fetch") as pool:
            futures = [pool.submit(one, want) for want in wants]
            try:
                for future in futures:
                    future.result()  # the first failure, in order
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return stats

    def _fetch_one(self, want: Want, stage: Path, partial: Path, progress: Progress) -> int | None:
        """Fetch one file into the stage: the bytes received over the network, -1 when the local candidate
        was linked instead, None when it is optional and absent."""
        dest = stage / want.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = partial / partial_name(want)

        def retried(exc: SourceError, attempt: int) -> None:
            progress.retry(want.rel, exc, attempt)

        total = [0]
        try:
            same = with_retries(lambda: self._transfer(want, part, progress, total), on_retry=retried)
        except FileNotFoundError:
            if want.optional:
                return None
            raise MissingAtSourceError(f"{self.url}: {want.rel}: missing at the source") from None
        if same:
            assert want.local is not None
            link_or_copy(want.local, dest)
            return -1
        os.replace(part, dest)
        return total[0]

    def _transfer(self, want: Want, part: Path, progress: Progress, total: list[int]) -> bool:
        """Download (or resume) ``want`` into ``part``, adding the bytes received to ``total[0]``; True when
        the local candidate is identical instead."""
        have = part.stat().st_size if part.exists() else 0
        if have > want.max_size:
            part.unlink()
            have = 0
        pace = self.pace(want.rel)
        body = self.open(want, have)
        if body is None:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            return True
        if body.start == 0 and have > 0:  # the source would not resume: start again
            have = 0
            part.unlink()
        received = 0
        try:
            with part.open("ab") as out:
                for chunk in body.chunks:
                    if have + received + len(chunk) > want.max_size:
                        out.close()
                        part.unlink()  # never resumed: the source holds something else
                        raise DigestError(want.rel, f"larger than the signed size {want.max_size}")
                    out.write(chunk)
                    received += len(chunk)
                    total[0] += len(chunk)
                    progress.advance(len(chunk))
                    pace.check(received)
        finally:
            body.close()
        if body.remaining is not None and received < min(body.remaining, want.max_size + 1 - have):
            raise TruncatedError(f"{want.rel}: the transfer ended after {have + received} bytes")
        return False
