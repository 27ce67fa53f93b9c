"""uvicorn's httptools protocol, adapted: immediate answers, coalesced writes and a lazy keep-alive timer.

**Immediate answers.** On uvicorn a request costs an ASGI cycle object, an event, a task and a round of the
event loop, plus a chain of message dicts — two thirds of the CPU of a small request once the app itself is
lean. When the application has an ``answer_now(scope)`` method (ours: :meth:`Gateway.answer_now
<stella_mirror.server.gateway.Gateway.answer_now>`), :class:`MirrorHttpToolsProtocol` calls it from the
parser's headers-complete callback — only for a plain HTTP/1.1 keep-alive request with nothing in flight on the
connection and the transport accepting writes — and, if it returns an :class:`Immediate`, queues that response
and skips the cycle. None means "take the ordinary path": uvicorn's request cycle, as adapted in
:mod:`stella_mirror.server.cycle` (corked writes, zero-copy file bodies), exactly as before.

**Coalesced writes.** Queued answers are written at the end of the event-loop round, all of the round's
together (see ``_queue_write``).

**Keep-alive.** One timer per idle period instead of one per request (see ``_keep_alive_due``).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any, NamedTuple

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from stella_mirror.server.cycle import EXTENSION, HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, MirrorCycle, header_block

log = logging.getLogger("stella_mirror.server")


class Immediate(NamedTuple):
    """A complete response an application hands the protocol from ``answer_now`` (see the module docstring).

    ``static`` is a header tuple kept between responses (formatted once, like
    :data:`~stella_mirror.server.cycle.PREFORMATTED`) or None;
    ``headers`` are this response's own. Together they must carry ``Content-Length``, the length of the body
    a GET gets; ``body`` is what is written after the headers (empty for HEAD)."""

    status: int
    static: tuple[tuple[bytes, bytes], ...] | None
    headers: list[tuple[bytes, bytes]]
    body: bytes


AnswerNow = Callable[[dict[str, Any]], Immediate | None]

QUEUE_LIMIT = 64 * 1024
"""Bytes of immediate answers a connection collects before they go to the transport within the same round."""


class MirrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with immediate answers and :class:`MirrorCycle` requests (corked writes)."""

    zero_copy = False
    """Advertise ``http.response.zerocopysend`` on plain-TCP connections (see :class:`ZeroCopyHttpToolsProtocol`)."""
    _answered = False
    """The request being parsed was answered immediately (its body, if any, is ignored)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answer_now: AnswerNow | None = getattr(self.app, "answer_now", None)

    def on_message_begin(self) -> None:
        self._answered = False
        super().on_message_begin()

    # Keep-alive timeout: uvicorn creates a timer when a response completes and cancels it when the next
    # request's bytes arrive — a timer heap push and removal for every request. Here the timer stays: the
    # connection only records when it became idle, and the timer, when it fires, closes the connection if it
    # has been idle for the whole timeout since, or waits for the rest of it. Same deadline, one timer per
    # idle period.

    _idle_since: float | None = None
    """When the last response completed with nothing queued behind it; None while a request is in progress."""

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this when bytes arrive (and on connection loss, handled below).
        self._idle_since = None

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        if self.pipeline:
            # uvicorn resumes reading here too, so a client that pipelines faster than it reads grows the queue
            # of parsed requests (a cycle and scope each) by a whole read for every response: hundreds of MB.
            # Reading stays paused until the queued requests are answered.
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.flow.resume_reading()
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if idle_since is None:
            return  # busy: the response that ends this request arms the timer again
        remaining = idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def send_400_response(self, msg: str) -> None:
        self._flush_queued()
        super().send_400_response(msg)

    def shutdown(self) -> None:
        self._flush_queued()
        super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        self._flush_queued()
        super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        self._queued = None  # the peer is gone
        super().connection_lost(exc)
        task = self.timeout_keep_alive_task
        if task is not None:
            task.cancel()
            self.timeout_keep_alive_task = None

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()

    def on_headers_complete(self) -> None:
        if self._answer_now is not None and self._try_immediate(self._answer_now):
            return
        self._flush_queued()  # the ordinary path writes after what was answered before it
        if self.zero_copy and self.transport.get_extra_info("sslcontext") is None:
            self.scope.setdefault("extensions", {})[EXTENSION] = {}
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            # The ASGI task is created but has not run yet, so its first ``self.send`` lookup already
            # sees the subclass; swapping the class avoids copying uvicorn's header parsing code.
            cycle.__class__ = MirrorCycle

    def _try_immediate(self, answer_now: AnswerNow) -> bool:
        """Answer the request whose headers were just parsed without an ASGI cycle, if the app can."""
        cycle = self.cycle
        parser = self.parser
        if (
            (cycle is not None and not cycle.response_complete)
            or self.pipeline
            or self.flow.write_paused
            or self.expect_100_continue
            or self.limit_concurrency is not None
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
        ):
            return False
        # The scope as uvicorn completes it (the ordinary path, if taken, sets the same keys again).
        scope = self.scope
        try:
            parsed_url = httptools.parse_url(self.url)
            raw_path = parsed_url.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserError, UnicodeDecodeError):
            return False  # uvicorn's own handling of a bad target applies
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["method"] = parser.get_method().decode("ascii")
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        try:
            answer = answer_now(scope)  # type: ignore[arg-type]
        except Exception:
            log.exception("immediate answer failed; taking the ordinary path")
            return False
        if answer is None:
            return False
        self._answered = True
        self._queue_write(self._format_immediate(answer))
        self.on_response_complete()
        return True

    # Coalesced writes. An immediate answer is not written at once but at the end of this round of the event
    # loop, together with every other answer of the round: on loopback, each write wakes the peer's thread,
    # and a client woken once for a batch of responses costs both sides far less than one woken per response
    # (measured: about a quarter less server CPU per small request, half again as many requests per second).
    # Order on a connection is kept: whatever else writes to the transport — the ordinary path, a 400 for
    # a malformed request, a close — flushes this connection's queue first.

    _queued: list[bytes] | None = None
    _queued_size = 0

    def _queue_write(self, data: bytes) -> None:
        queued = self._queued
        if queued is None:
            self._queued = [data]
            self._queued_size = len(data)
            self.loop.call_soon(self._flush_queued)
            return
        queued.append(data)
        self._queued_size += len(data)
        if self._queued_size >= QUEUE_LIMIT:
            # Many pipelined requests in one read: hand them to the transport now, so that its flow control
            # (write_paused → the ordinary path → reading paused) sees them.
            self._flush_queued()

    def _flush_queued(self) -> None:
        queued = self._queued
        if queued is None:
            return
        self._queued = None
        self._queued_size = 0
        if not self.transport.is_closing():
            self.transport.write(b"".join(queued) if len(queued) > 1 else queued[0])

    def _format_immediate(self, answer: Immediate) -> bytes:
        status, static, headers, body = answer
        head = _immediate_head(status, self.server_state.default_headers, static)
        if head is None:  # the static headers failed validation: format them with the rest
            head = _immediate_head(status, self.server_state.default_headers, None)
            assert head is not None and static is not None
            headers = [*static, *headers]
        names = b"".join([name for name, _ in headers])
        values = b"".join([value for _, value in headers])
        if HEADER_RE.search(names) or HEADER_VALUE_RE.search(values):
            # Our own code built these, so this is a bug; answer like uvicorn does for an app error.
            log.error("immediate answer with an invalid header; answering 500")
            return (
                STATUS_LINE[500] + b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n\r\n"
                b"Internal Server Error"
            )
        return b"".join([head, *[b"%s: %s\r\n" % pair for pair in headers], b"\r\n", body])


_HEADS: dict[tuple[int, int, int], tuple[object, object, bytes]] = {}
_HEADS_LIMIT = 1024


def _immediate_head(
    status: int, defaults: list[tuple[bytes, bytes]], static: tuple[tuple[bytes, bytes], ...] | None
) -> bytes | None:
    """Status line, uvicorn's default headers (the date, a new list every second) and a preformatted header
    tuple, formatted once per (status, defaults, static) and reused; None when ``static`` is not usable."""
    key = (status, id(defaults), id(static))
    hit = _HEADS.get(key)
    if hit is not None and hit[0] is defaults and hit[1] is static:
        return hit[2]
    parts = [STATUS_LINE[status], *[b"%s: %s\r\n" % pair for pair in defaults]]
    if static is not None:
        block = header_block(static)
        if block is None:
            return None
        parts.append(block.wire)
    head = b"".join(parts)
    if len(_HEADS) >= _HEADS_LIMIT:
        _HEADS.clear()
    _HEADS[key] = (defaults, static, head)  # the objects stay alive while cached, so their ids stay theirs
    return head


class ZeroCopyHttpToolsProtocol(MirrorHttpToolsProtocol):
    """… that also sends file bodies with ``os.sendfile`` (plain TCP only; TLS connections never get it)."""

    zero_copy = True
