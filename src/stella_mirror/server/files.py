"""File responses with the HTTP semantics of DESIGN §5: strong ETag, Last-Modified, 304, HEAD, Range, encodings.

* **ETag** is ``"<sha256 hex of the bytes served>"`` — the digest the signed metadata lists for the file —
  computed once per file version and cached by ``(device, inode, mtime, size)``. A precompressed variant
  is another representation, so its ETag is the digest of its own bytes with the coding appended
  (``"<hex>-zstd"`` / ``"<hex>-gzip"``).
* **Conditional requests**: ``If-None-Match`` (weak comparison, ``*``) wins over ``If-Modified-Since``;
  both answer ``304`` with the validators and no body.
* **Range**: one ``bytes=`` range (``a-b``, ``a-``, ``-n``) answers ``206`` with ``Content-Range``; an
  unsatisfiable one ``416`` with ``Content-Range: bytes */<size>``. Several ranges are answered with the
  whole representation (``200``) — allowed by RFC 9110 §14.2 and what CDNs expect; a malformed header is
  ignored likewise. ``If-Range`` with a different validator also yields the whole representation.
* **Encodings**: ``<file>.zst`` and ``<file>.gz`` written beside a payload (see :func:`precompress`) are
  chosen by ``Accept-Encoding`` with q-values; responses carry ``Vary: Accept-Encoding``.
* **Bodies**: small files (≤ 256 KiB) are served from an in-memory cache keyed by the file version. A larger
  whole file goes out with the ASGI ``http.response.pathsend`` extension when the server offers it (granian):
  the server reads the file as the client takes it, one bounded buffer per connection. Otherwise — and for
  ``206`` parts, which ``pathsend`` cannot express — it is read with ``pread`` in 64 KiB chunks from the
  descriptor opened for this request; each chunk waits for the server's flow control (uvicorn: the socket's
  write buffer) for at most :data:`SEND_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import zstandard
from starlette.types import Scope, Send

from stella_mirror.server.exports import ExportNotFound, open_file

SMALL_FILE_LIMIT = 256 * 1024
CHUNK = 1024 * 1024
"""Read size for hashing."""
SEND_CHUNK = 64 * 1024
"""Body chunk size when the server has no ``pathsend``: what one stalled connection holds besides its buffers."""
SEND_TIMEOUT = 60.0
"""Seconds one body chunk may wait for a client that does not read before the response is given up."""
PATHSEND = "http.response.pathsend"
_SMALL_CACHE_BYTES = 64 * 1024 * 1024
_DIGEST_CACHE_ENTRIES = 4096

ENCODINGS: tuple[tuple[str, str], ...] = (("zstd", ".zst"), ("gzip", ".gz"))
"""Content codings we serve precompressed, in server preference order, with their file suffixes."""

CONTENT_TYPES = {
    ".json": b"application/json",
    ".jws": b"application/jose",
    ".sig": b"text/plain; charset=us-ascii",
    ".jsonl": b"application/x-ndjson",
}


class TruncatedFile(Exception):
    """A file ended before its announced size while its body was being sent (the connection must end)."""


@dataclass(frozen=True, slots=True)
class Version:
    """Identity of one file version: changes whenever the bytes could have."""

    dev: int
    ino: int
    mtime_ns: int
    size: int


class FileCache:
    """Digests of file versions and the bytes of small ones; bounded, shared by all requests."""

    def __init__(self, small_bytes: int = _SMALL_CACHE_BYTES) -> None:
        self._small: OrderedDict[Version, tuple[bytes, str]] = OrderedDict()
        self._small_total = 0
        self._small_limit = small_bytes
        self._digests: OrderedDict[Version, str] = OrderedDict()
        self._pending: dict[Version, asyncio.Future[str]] = {}
        self._validators: dict[tuple[Version, str | None], tuple[bytes, bytes]] = {}

    def cached_small(self, version: Version) -> tuple[bytes, str] | None:
        """The cached bytes and hex digest of a small file version, if read before."""
        return self._small.get(version)

    def validators(self, version: Version, encoding: str | None, hexdigest: str, mtime: float) -> tuple[bytes, bytes]:
        """``(ETag, Last-Modified)`` header values for a representation, formatted once."""
        key = (version, encoding)
        hit = self._validators.get(key)
        if hit is None:
            etag = f'"{hexdigest}-{encoding}"' if encoding else f'"{hexdigest}"'
            hit = (etag.encode("ascii"), http_date(mtime).encode("ascii"))
            if len(self._validators) >= _DIGEST_CACHE_ENTRIES:
                self._validators.clear()
            self._validators[key] = hit
        return hit

    def small(self, fd: int, version: Version) -> tuple[bytes, str]:
        """The bytes and hex digest of a small file (read once per version)."""
        hit = self._small.get(version)
        if hit is not None:
            return hit
        data = os.pread(fd, version.size, 0)
        if len(data) != version.size:
            raise ExportNotFound("file changed while reading")
        entry = (data, hashlib.sha256(data).hexdigest())
        self._small[version] = entry
        self._small_total += len(data)
        while self._small_total > self._small_limit and self._small:
            _, (old, _) = self._small.popitem(last=False)
            self._small_total -= len(old)
        return entry

    async def digest(self, fd: int, version: Version) -> str:
        """The hex digest of a large file, computed once (in a thread) per version."""
        hit = self._digests.get(version)
        if hit is not None:
            return hit
        pending = self._pending.get(version)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        self._pending[version] = fut
        try:
            value = await loop.run_in_executor(None, _hash_fd, os.dup(fd), version.size)
            fut.set_result(value)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: a concurrent waiter may not exist
            raise
        finally:
            del self._pending[version]
        self._digests[version] = value
        if len(self._digests) > _DIGEST_CACHE_ENTRIES:
            self._digests.popitem(last=False)
        return value


def _hash_fd(fd: int, size: int) -> str:
    try:
        h = hashlib.sha256()
        offset = 0
        while offset < size:
            block = os.pread(fd, CHUNK * 4, offset)
            if not block:
                break
            h.update(block)
            offset += len(block)
        return h.hexdigest()
    finally:
        os.close(fd)


# --- request header parsing ------------------------------------------------------------------------


def parse_accept_encoding(value: str | None) -> dict[str, float]:
    """``Accept-Encoding`` as ``{coding: q}`` (lower-case); malformed members are skipped."""
    out: dict[str, float] = {}
    if not value:
        return out
    for member in value.split(",")[:32]:
        parts = member.strip().split(";")
        coding = parts[0].strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in parts[1:]:
            name, _, val = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(val.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        out[coding] = q
    return out


def choose_encodings(accept: dict[str, float]) -> list[tuple[str, str]]:
    """Codings acceptable to the client, best first (q, then our preference); identity is implicit."""
    if not accept:
        return []
    star = accept.get("*")
    ranked = []
    for pref, (coding, suffix) in enumerate(ENCODINGS):
        q = accept.get(coding, star if star is not None else 0.0)
        if coding == "gzip" and "x-gzip" in accept and coding not in accept:
            q = accept["x-gzip"]
        if q > 0:
            ranked.append((-q, pref, coding, suffix))
    ranked.sort()
    return [(coding, suffix) for _, _, coding, suffix in ranked]


def parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """One ``bytes=`` range → ``(start, end_inclusive)``; ``None`` to ignore (malformed or several ranges);
    ``False`` when syntactically fine but unsatisfiable (→ 416)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or not spec or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if (first and not first.isdigit()) or (last and not last.isdigit()) or len(first) > 19 or len(last) > 19:
        return None
    if not first:
        if not last:
            return None
        n = int(last)
        if n == 0 or size == 0:
            return False
        return (max(size - n, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    return (start, min(end, size - 1))


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2) of an ``If-None-Match`` list against our strong ETag."""
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == bare for candidate in header.split(","))


def http_date(ts: float) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return formatdate(int(ts), usegmt=True)


def _not_modified_since(header: str, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since is None or since.tzinfo is None:
        return False
    return int(mtime) <= since.timestamp()


def content_type_for(name: str) -> bytes:
    for ext, ctype in CONTENT_TYPES.items():
        if name.endswith(ext):
            return ctype
    return b"application/octet-stream"


# --- serving -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Representation:
    """One representation of a file (identity or a precompressed variant) chosen for a request.

    Small files come from the cache (``body`` set, no descriptor); large ones are opened (``fd`` set —
    the caller closes it) and read through that descriptor, so the bytes are those of this version even
    if the file is replaced or its export pruned while the response is being sent.
    """

    version: Version
    mtime: float
    encoding: str | None
    name: str = ""
    """The file's name in its directory (``bundle.json.zst`` for a zstd representation)."""
    fd: int | None = None
    body: bytes | None = None
    hexdigest: str | None = None


def _lstat_regular(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _open_version(dir_fd: int, name: str, encoding: str | None, cache: FileCache) -> Representation:
    fd = open_file(dir_fd, (name,))
    st = os.fstat(fd)
    version = Version(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if st.st_size > SMALL_FILE_LIMIT:
        return Representation(version, st.st_mtime, encoding, name, fd=fd)
    try:
        body, hexdigest = cache.small(fd, version)
    finally:
        os.close(fd)
    return Representation(version, st.st_mtime, encoding, name, body=body, hexdigest=hexdigest)


def open_representation(
    dir_fd: int,
    name: str,
    accept_encoding: str | None,
    negotiate: bool,
    cache: FileCache,
    lstat: Callable[[str], os.stat_result | None] | None = None,
) -> Representation:
    """The best representation of ``name`` in the directory ``dir_fd`` for this ``Accept-Encoding``.

    Nothing is followed: the name must be a regular file (``lstat``/``O_NOFOLLOW``), else
    :class:`ExportNotFound`. A small file already cached for the same (device, inode, mtime, size) is
    served without opening it. ``lstat`` may supply (memoised) ``lstat`` results for names in ``dir_fd``.
    """
    candidates: list[tuple[str | None, str]] = []
    if negotiate and accept_encoding:
        candidates = [
            (coding, name + suffix) for coding, suffix in choose_encodings(parse_accept_encoding(accept_encoding))
        ]
    candidates.append((None, name))
    for encoding, fname in candidates:
        st = lstat(fname) if lstat is not None else _lstat_regular(dir_fd, fname)
        if st is None:
            continue
        if st.st_size <= SMALL_FILE_LIMIT:
            version = Version(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            hit = cache.cached_small(version)
            if hit is not None:
                return Representation(version, st.st_mtime, encoding, fname, body=hit[0], hexdigest=hit[1])
        try:
            return _open_version(dir_fd, fname, encoding, cache)
        except ExportNotFound:
            continue  # replaced between lstat and open: try the next candidate
    raise ExportNotFound("not found")


_PRECONDITIONS = frozenset({b"if-none-match", b"if-modified-since", b"range", b"if-range"})


def _headers(scope_headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {k: v for k, v in scope_headers if k in _PRECONDITIONS}


def _entity_headers(
    etag: bytes, last_modified: bytes, extra_headers: list[tuple[bytes, bytes]], negotiate: bool
) -> list[tuple[bytes, bytes]]:
    """Validators and what describes the resource: the headers of a 304 and the start of every 200/206."""
    headers = [(b"etag", etag), (b"last-modified", last_modified), *extra_headers]
    if negotiate:
        headers.append((b"vary", b"Accept-Encoding"))
    return headers


def _content_headers(rep: Representation, content_type: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type), (b"accept-ranges", b"bytes")]
    if rep.encoding:
        headers.append((b"content-encoding", rep.encoding.encode()))
    return headers


def full_response_headers(
    rep: Representation,
    cache: FileCache,
    content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]],
    negotiate: bool,
) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a ``200`` with the whole of a cached small representation (what
    :func:`send_representation` answers to a request without preconditions or ``Range``), for callers that
    keep them with the representation and answer such requests with :func:`send_full`."""
    assert rep.hexdigest is not None
    etag, last_modified = cache.validators(rep.version, rep.encoding, rep.hexdigest, rep.mtime)
    return (
        *_entity_headers(etag, last_modified, extra_headers, negotiate),
        *_content_headers(rep, content_type),
        (b"content-length", b"%d" % rep.version.size),
    )


async def send_full(scope: Scope, send: Send, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    """Answer ``200`` with ``body`` and headers from :func:`full_response_headers` (HEAD: no body)."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def send_representation(
    scope: Scope,
    send: Send,
    rep: Representation,
    cache: FileCache,
    content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]],
    negotiate: bool,
    path: str | None = None,
) -> None:
    """Answer a GET/HEAD for an opened representation (closes nothing: the caller owns ``rep.fd``). ``path`` names
    the same file in an immutable export directory, for servers that send whole files themselves (``pathsend``)."""
    size = rep.version.size
    body = rep.body
    hexdigest = rep.hexdigest
    if hexdigest is None:
        assert rep.fd is not None
        hexdigest = await cache.digest(rep.fd, rep.version)
    etag_b, lm_b = cache.validators(rep.version, rep.encoding, hexdigest, rep.mtime)
    etag, last_modified = etag_b.decode("ascii"), lm_b.decode("ascii")
    headers = _entity_headers(etag_b, lm_b, extra_headers, negotiate)
    req = _headers(scope["headers"])
    inm = req.get(b"if-none-match")
    ims = req.get(b"if-modified-since")
    if (inm is not None and _etag_matches(inm.decode("latin-1"), etag)) or (
        inm is None and ims is not None and _not_modified_since(ims.decode("latin-1"), rep.mtime)
    ):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += _content_headers(rep, content_type)
    status = 200
    start, end = 0, size - 1
    range_header = req.get(b"range")
    if range_header is not None:
        if_range = req.get(b"if-range")
        honour = if_range is None or if_range.decode("latin-1").strip() in (etag, last_modified)
        parsed = parse_range(range_header.decode("latin-1"), size) if honour else None
        if parsed is False:
            headers.append((b"content-range", f"bytes */{size}".encode()))
            headers = [(k, v) for k, v in headers if k not in (b"content-type", b"content-encoding")]
            problem = (
                b'{"type":"https://stella-ops.org/problems/range-not-satisfiable",'
                b'"title":"Range not satisfiable","status":416}'
            )
            headers += [(b"content-type", b"application/problem+json"), (b"content-length", b"%d" % len(problem))]
            await send({"type": "http.response.start", "status": 416, "headers": headers})
            await send({"type": "http.response.body", "body": problem})
            return
        if isinstance(parsed, tuple):
            start, end = parsed
            status = 206
            headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    length = end - start + 1 if size else 0
    headers.append((b"content-length", b"%d" % length))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if scope["method"] == "HEAD" or length == 0:
        await send({"type": "http.response.body", "body": b""})
        return
    if body is not None:
        chunk = body if length == size else body[start : end + 1]
        await send({"type": "http.response.body", "body": chunk})
        return
    assert rep.fd is not None
    if status == 200 and path is not None and PATHSEND in (scope.get("extensions") or {}):
        await send({"type": PATHSEND, "path": path})
        return
    offset = start
    remaining = length
    while remaining > 0:
        block = os.pread(rep.fd, min(SEND_CHUNK, remaining), offset)
        if not block:
            raise TruncatedFile("file shrank while serving")
        offset += len(block)
        remaining -= len(block)
        async with asyncio.timeout(SEND_TIMEOUT):
            await send({"type": "http.response.body", "body": block, "more_body": remaining > 0})


async def send_bytes(
    scope: Scope,
    send: Send,
    data: bytes,
    hexdigest: str,
    content_type: bytes,
    extra_headers: list[tuple[bytes, bytes]],
    last_modified: float | None = None,
) -> None:
    """Answer with generated bytes (e.g. a JSON document), with ETag/304/HEAD but no Range."""
    etag = f'"{hexdigest}"'
    headers: list[tuple[bytes, bytes]] = [(b"etag", etag.encode()), *extra_headers]
    if last_modified is not None:
        headers.append((b"last-modified", http_date(last_modified).encode()))
    req = _headers(scope["headers"])
    inm = req.get(b"if-none-match")
    ims = req.get(b"if-modified-since")
    if (inm is not None and _etag_matches(inm.decode("latin-1"), etag)) or (
        inm is None
        and ims is not None
        and last_modified is not None
        and _not_modified_since(ims.decode("latin-1"), last_modified)
    ):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [(b"content-type", content_type), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})


# --- precompression ---------------------------------------------------------------------------------

COMPRESSIBLE = (".json", ".jsonl")


def precompress(path: Path, levels: tuple[int, int] = (19, 9)) -> list[Path]:
    """Write ``<path>.zst`` and ``<path>.gz`` beside ``path`` (atomically) and return them.

    Meant for staging directories and operator-owned copies — never run against a read-only export root
    mount. Output is deterministic (gzip without a timestamp), so repeated runs give identical bytes.
    """
    from stella_mirror.bundle.files import open_atomic

    zst_level, gz_level = levels
    out: list[Path] = []
    for suffix, make in (
        (".zst", lambda: zstandard.ZstdCompressor(level=zst_level, write_checksum=True).compressobj()),
        (".gz", lambda: zlib.compressobj(gz_level, zlib.DEFLATED, 31)),
    ):
        target = path.with_name(path.name + suffix)
        comp = make()
        with path.open("rb") as src, open_atomic(target) as dst:
            while block := src.read(CHUNK):
                dst.write(comp.compress(block))
            dst.write(comp.flush())
        out.append(target)
    return out


def precompress_tree(root: Path, min_size: int = 1024) -> list[Path]:
    """Precompress every JSON payload (and index) under ``root`` of at least ``min_size`` bytes."""
    written: list[Path] = []
    for path in sorted(root.rglob("*")):
        regular = path.is_file() and not path.is_symlink()
        if regular and path.name.endswith(COMPRESSIBLE) and path.stat().st_size >= min_size:
            written += precompress(path)
    return written
