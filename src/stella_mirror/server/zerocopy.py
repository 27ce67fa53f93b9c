"""Zero-copy file bodies for uvicorn: the ASGI "Zero Copy Send" extension over ``os.sendfile``.

uvicorn does not implement ``http.response.zerocopysend`` (nor ``pathsend``), so a file body would be
read into Python and written through the transport in chunks. For 20 MB bundles that copy dominates.
This module plugs the extension into uvicorn's httptools protocol:

* :class:`ZeroCopyHttpToolsProtocol` advertises ``scope["extensions"]["http.response.zerocopysend"]``
  on plain-TCP connections only (``sendfile`` would bypass TLS, so TLS connections never get it and
  the app falls back to ordinary body messages);
* its request cycle handles ``{"type": "http.response.zerocopysend", "file": fileobj, "offset": int,
  "count": int, "more_body": bool}`` by waiting until the headers left the transport buffer and then
  calling non-blocking ``os.sendfile`` on a *duplicate* of the socket descriptor, waiting for
  writability with ``loop.add_writer`` on that duplicate (uvloop refuses readers/writers on a
  descriptor owned by a transport, and the duplicate also keeps the socket alive should the
  transport close it underneath us, so bytes can never go to a recycled descriptor number).

The file object is opened by the app before the response starts, so the bytes sent are those of the
inode resolved for this request even if a publish replaces or prunes the export meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

EXTENSION = "http.response.zerocopysend"
MESSAGE = "http.response.zerocopysend"
SEND_TIMEOUT = 120.0
"""Seconds a client may stall (socket not writable) before the connection is dropped."""


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


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request cycle plus the zero-copy send message."""

    async def send(self, message: Any) -> None:
        if message.get("type") != MESSAGE:
            await super().send(message)
            return
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


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests may use ``http.response.zerocopysend``."""

    def on_headers_complete(self) -> None:
        plain_tcp = self.transport.get_extra_info("sslcontext") is None
        if plain_tcp:
            self.scope.setdefault("extensions", {})[EXTENSION] = {}
        super().on_headers_complete()
        cycle = self.cycle
        if plain_tcp and cycle is not None and type(cycle) is RequestResponseCycle:
            # The ASGI task is created but has not run yet, so its first ``self.send`` lookup already
            # sees the subclass; swapping the class avoids copying uvicorn's header parsing code.
            cycle.__class__ = ZeroCopyCycle
