"""uvicorn's request cycle, adapted: one write per small response, preformatted header blocks, and
zero-copy file bodies (ASGI "Zero Copy Send"). Used by :mod:`stella_mirror.server.protocol` for every request
that does not get an immediate answer.

**Corking.** uvicorn writes the status line and headers to the transport as soon as the app sends
``http.response.start``, and the body with the next message — two ``send`` system calls and two TCP
segments for every small response. On loopback that second write was the largest single cost in a
profile of the index route. :class:`MirrorCycle` collects what uvicorn writes for a response and hands it to
the transport in one write per body message (headers + first body chunk together).

**Zero copy.** uvicorn does not implement ``http.response.zerocopysend`` (nor ``pathsend``), so a file body would be
read into Python and written through the transport in chunks. For 20 MB bundles that copy dominates.
The protocol advertises ``scope["extensions"]["http.response.zerocopysend"]`` on plain-TCP connections only
(``sendfile`` would bypass TLS, so TLS connections never get it and the app falls back to ordinary body
messages), and :class:`MirrorCycle` handles ``{"type": "http.response.zerocopysend", "file": fileobj,
"offset": int, "count": int, "more_body": bool}`` by waiting until the headers left the transport buffer and
then calling non-blocking ``os.sendfile`` on a *duplicate* of the socket descriptor, waiting for writability
with ``loop.add_writer`` on that duplicate (uvloop refuses readers/writers on a descriptor owned by a
transport, and the duplicate also keeps the socket alive should the transport close it underneath us, so
bytes can never go to a recycled descriptor number).

The file object is opened by the app before the response starts, so the bytes sent are those of the
inode resolved for this request even if a publish replaces or prunes the export meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import os
import re
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

EXTENSION = "http.response.zerocopysend"
MESSAGE = "http.response.zerocopysend"
PREFORMATTED = "stella_mirror.preformatted"
"""Optional key of an ``http.response.start`` message: a tuple of headers that the message's ``headers``
begin with, the same object from response to response (see :class:`MirrorCycle`). Other servers ignore it."""
SEND_TIMEOUT = 120.0
"""Seconds a client may stall (socket not writable) before the connection is dropped."""

# Header checks and status lines as uvicorn (0.55) writes them, defined here rather than imported from
# its private module: both our response paths format with them, and tests compare what the two paths
# send byte for byte (tests/unit/server/test_immediate.py).
HEADER_RE = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
"""Bytes not allowed in a header name."""
HEADER_VALUE_RE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
"""Bytes not allowed in a header value."""


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


STATUS_LINE = {code: _status_line(code) for code in range(100, 600)}


async def _wait_writable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        loop.remove_writer(fd)


async def sendfile_to_transport(transport: asyncio.Transport, file_fd: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` straight to the transport's socket.

    Returns the number of bytes sent (less than ``count`` only if the file is shorter than announced).
    Raises ``OSError`` when the peer goes away and ``TimeoutError`` when it stalls.
    """
    loop = asyncio.get_running_loop()
    # Headers (and anything else) written through the transport must reach the socket first.
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("transport closed before the body was sent")
        await asyncio.sleep(0.0005)
    sock = transport.get_extra_info("socket")
    dup = os.dup(sock.fileno())
    sent = 0
    try:
        while count > 0:
            try:
                n = os.sendfile(dup, file_fd, offset, count)
            except BlockingIOError:
                await _wait_writable(loop, dup, SEND_TIMEOUT)
                continue
            if n == 0:
                break
            offset += n
            count -= n
            sent += n
    finally:
        os.close(dup)
    return sent


class _Collecting:
    """Stands in for the transport while uvicorn formats a response: writes are collected, not sent."""

    __slots__ = ("buffer", "real")

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real
        self.buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.buffer.append(data)

    def flush(self) -> None:
        if self.buffer:
            data = b"".join(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
            self.buffer.clear()
            self.real.write(data)

    def close(self) -> None:
        self.flush()
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class HeaderBlock:
    """The validated wire form of a preformatted header tuple and what it says about framing."""

    __slots__ = ("content_length", "headers", "wire")

    def __init__(self, headers: tuple[tuple[bytes, bytes], ...], wire: bytes, content_length: int | None) -> None:
        self.headers = headers  # kept alive while cached, so its id() cannot be reused meanwhile
        self.wire = wire
        self.content_length = content_length


_BLOCKS: dict[int, HeaderBlock | None] = {}
_BLOCKS_LIMIT = 1024


def header_block(static: tuple[tuple[bytes, bytes], ...]) -> HeaderBlock | None:
    """The cached wire form of ``static`` (None when it cannot be used: it sets framing other than
    Content-Length, or has invalid names or values — the ordinary path then deals with it)."""
    key = id(static)
    entry = _BLOCKS.get(key)
    if entry is not None and entry.headers is static:
        return entry
    names = [name.lower() for name, _ in static]
    values = [value for _, value in static]
    block: HeaderBlock | None = None
    usable = not (
        HEADER_RE.search(b"".join(names))
        or HEADER_VALUE_RE.search(b"".join(values))
        or b"transfer-encoding" in names
        or b"connection" in names
    )
    if usable:
        length = next((int(v.decode()) for n, v in zip(names, values, strict=True) if n == b"content-length"), None)
        wire = b"".join([b"%s: %s\r\n" % pair for pair in zip(names, values, strict=True)])
        block = HeaderBlock(static, wire, length)
    if len(_BLOCKS) >= _BLOCKS_LIMIT:
        _BLOCKS.clear()
    if block is not None:
        _BLOCKS[key] = block
    return block


class MirrorCycle(RequestResponseCycle):
    """uvicorn's request cycle with corked response writes and the zero-copy send message."""

    _pending_head: bytes | None = None

    async def send(self, message: Any) -> None:
        kind = message.get("type")
        if kind == MESSAGE:
            await self._zerocopy(message)
            return
        if kind == "http.response.start" and not self.response_started and not self.access_log:
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if not self.disconnected:
                self._pending_head = self._format_head(message)
            return
        head = self._pending_head
        if head is not None and kind == "http.response.body" and self._complete_in_one_write(head, message):
            return
        real = self.transport
        if isinstance(real, _Collecting):  # pragma: no cover - re-entrancy guard
            await super().send(message)
            return
        collector = _Collecting(real)
        if self._pending_head is not None:
            # The headers go out with this message's bytes (also when uvicorn closes the connection:
            # the collector writes what it holds before closing).
            collector.buffer.append(self._pending_head)
            self._pending_head = None
        self.transport = collector  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = real
        if kind == "http.response.start":
            self._pending_head = b"".join(collector.buffer) if collector.buffer else None
            return
        if collector.buffer and not real.is_closing():
            collector.flush()

    def _complete_in_one_write(self, head: bytes, message: Any) -> bool:
        """The common case — the last body message of a Content-Length response that fits exactly — done
        here: head and body in one ``write``, then what uvicorn does when a response completes. False (and
        nothing done) for anything else, which takes uvicorn's own path (errors, chunks, flow control)."""
        if message.get("more_body", False) or self.chunked_encoding or self.disconnected or self.flow.write_paused:
            return False
        if self.scope["method"] == "HEAD":
            data = head
        else:
            body = message.get("body", b"")
            if len(body) != self.expected_content_length:
                return False
            data = head + body if body else head
        self._pending_head = None
        self.expected_content_length = 0
        self.transport.write(data)
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True

    def _format_head(self, message: Any) -> bytes:
        """uvicorn's status line and header formatting (same framing rules), validated in two regex calls
        over all names and all values instead of two per header.

        A message may name a leading part of its headers as preformatted (:data:`PREFORMATTED`: the same
        tuple object, e.g. a file's headers kept between requests); that part is validated and formatted
        once per tuple and reused, and only the rest (date, request id, rate limits...) is formatted here.
        """
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        message_headers = message.get("headers", ())
        static = message.get(PREFORMATTED)
        block = None
        if static is not None and isinstance(message_headers, list | tuple):
            n = len(static)
            if tuple(message_headers[:n]) == static:
                block = header_block(static)
                if block is not None:
                    message_headers = message_headers[n:]
        headers = [*self.default_headers, *message_headers]
        names = [name.lower() for name, _ in headers]
        values = [value for _, value in headers]
        if HEADER_RE.search(b"".join(names)):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join(values)):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status_code]]
        if block is not None:
            # The preformatted headers come right after uvicorn's defaults, as they would unformatted.
            n_default = len(self.default_headers)
            for name, value in zip(names[:n_default], values[:n_default], strict=True):
                content.extend((name, b": ", value, b"\r\n"))
            content.append(block.wire)
            if block.content_length is not None and self.chunked_encoding is None:
                self.expected_content_length = block.content_length
                self.chunked_encoding = False
            names, values = names[n_default:], values[n_default:]
        has_connection_close = False
        for name, value in zip(names, values, strict=True):
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
                self.keep_alive = False
                has_connection_close = True
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)

    def _flush_head(self) -> None:
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            self.transport.write(head)

    async def _zerocopy(self, message: Any) -> None:
        self._flush_head()
        if not self.response_started or self.response_complete:
            raise RuntimeError("zerocopysend is only valid after http.response.start and before completion")
        if self.chunked_encoding:
            raise RuntimeError("zerocopysend needs a Content-Length response")
        more_body = bool(message.get("more_body", False))
        if self.disconnected:
            return
        if self.scope["method"] != "HEAD":
            fileobj = message["file"]
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
            offset = int(message.get("offset") or 0)
            count = message.get("count")
            if count is None:
                count = os.fstat(fd).st_size - offset
            if count > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            if self.flow.write_paused:
                await self.flow.drain()
            try:
                sent = await sendfile_to_transport(self.transport, fd, offset, count)
            except (OSError, TimeoutError):
                # Peer gone or stalled: nothing sensible can follow on this connection.
                self.disconnected = True
                with contextlib.suppress(Exception):
                    self.transport.close()
                return
            if sent != count:
                # The file shrank under us; the framing is broken, so the connection must end.
                self.transport.close()
                self.disconnected = True
                return
            self.expected_content_length -= count
        await super().send({"type": "http.response.body", "body": b"", "more_body": more_body})
