"""Access log: one JSON line per request (fit for a SIEM) and the per-request metrics.

The gateway (:mod:`stella_mirror.server.gateway`) calls :meth:`AccessLog.begin` first: it creates the
:class:`RequestContext` (request id, client, host, user agent, and what later steps need — read in one pass
over the headers); the gateway times the whole request, counts status and body bytes, echoes
``X-Request-ID`` and, when the request finishes, :meth:`AccessLog.finish` records metrics and writes the
log line::

    {"time":"2025-01-01T00:00:00.123Z","requestId":"…","client":"10.0.0.1","method":"GET",
     "path":"/concelier/exports/mirror/primary/bundle.json","route":"concelier.bundle","product":"concelier",
     "domain":"primary","principal":"alice","auth":"basic","status":200,"bytes":20971520,"durationMs":12.3,
     "userAgent":"curl/8.5.0","host":"mirror-primary.example","exportId":"20250101T000000Z",
     "encoding":"zstd","range":"bytes=0-99","conditional":true}

``bytes`` is what the server took of the body: for a client that left (or stalled past the send timeout) before
the announced ``Content-Length`` went out, it is less, and the line carries ``"aborted": true``. That needs a
server whose ``send`` waits for the client (uvicorn, the TLS server): granian takes a body whole — a file with
``pathsend``, a Range part at once — and does not report how much of it arrived, so there it counts as sent.

The principal is a user name or token subject — never a password, token or hash; the ``Authorization``
header is only handed on to authentication, never logged. Lines are buffered and flushed every half second
(and at shutdown), so logging costs one ``orjson.dumps`` per request, not a system call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import orjson
from starlette.types import Scope

from stella_mirror.server.context import CONTEXT_KEY, RequestContext
from stella_mirror.server.metrics import Metrics
from stella_mirror.server.middleware.domain import normalise_host
from stella_mirror.server.state import ServerState, client_address

log = logging.getLogger("stella_mirror.server")

FLUSH_INTERVAL = 0.5
_BUFFER_LIMIT = 256 * 1024
_MAX_FIELD = 1024
_CONDITIONAL = (b"if-none-match", b"if-modified-since")
_OPTIONAL = ("exportId", "encoding", "range", "conditional")
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _clean_request_id(value: bytes) -> str | None:
    text = value.decode("latin-1")
    if 0 < len(text) <= 128 and all(c in _ID_CHARS for c in text):
        return text
    return None


class AccessLogSink:
    """Buffered JSON-lines output to stdout (``-``) or an append-only file."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._stream: IO[bytes]
        if target == "-":
            self._stream = sys.stdout.buffer
            self._owned = False
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self._stream = os.fdopen(fd, "ab", buffering=0)
            self._owned = True
        self._buf: list[bytes] = []
        self._size = 0
        self._second = -1
        self._prefix = ""

    def timestamp(self, now: float) -> str:
        """RFC 3339 UTC with milliseconds; the seconds part is formatted once per second."""
        sec = int(now)
        if sec != self._second:
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{int((now - sec) * 1000):03d}Z"

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        self._buf.append(line)
        self._size += len(line)
        if self._size >= _BUFFER_LIMIT:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except OSError as exc:  # a full disk must not take requests down with it
            log.error("access log write failed: %s", exc.strerror)

    def reopen(self) -> None:
        """Reopen a file target (after log rotation); called on reload."""
        self.flush()
        if self._owned:
            old = self._stream
            fd = os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self._stream = os.fdopen(fd, "ab", buffering=0)
            old.close()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._stream.close()

    async def run_flusher(self) -> None:
        """Flush periodically until cancelled."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL)
                self.flush()
        finally:
            self.flush()


class AccessLog:
    """Request context, request ids, the per-request metrics and the log line (the gateway calls
    :meth:`begin` first and :meth:`finish` last for every HTTP request)."""

    def __init__(self, sink: Callable[[], AccessLogSink | None], metrics: Metrics | None) -> None:
        self.sink = sink
        self.metrics = metrics
        self._ids = itertools.count(1)
        self._id_prefix = f"{secrets.token_hex(4)}{os.getpid():x}-"

    def begin(self, scope: Scope, state: ServerState | None = None) -> tuple[RequestContext, str | None]:
        """The request's context (stored in the scope) and its ``Authorization`` header, from one pass over the
        request headers. The client is the peer, or the address a trusted proxy forwarded
        (:func:`~stella_mirror.server.state.client_address`, ``mirror.trustedProxies`` of ``state``).
        ``ctx.extra`` gets ``host``, ``ua``, ``range``, ``conditional`` and ``accept`` (the
        ``Accept-Encoding`` value) when present."""
        client = scope.get("client")
        ctx = RequestContext(request_id="", client=client[0] if client else "")
        extra = ctx.extra
        request_id = None
        authorization = None
        forwarded: str | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                extra["host"] = normalise_host(value)
            elif name == b"user-agent":
                extra["ua"] = value[:256].decode("latin-1")
            elif name == b"authorization":
                authorization = bytes(value).decode("latin-1")
            elif name == b"accept-encoding":
                extra["accept"] = bytes(value).decode("latin-1")
            elif name == b"x-request-id":
                request_id = _clean_request_id(value)
            elif name == b"range":
                extra["range"] = value[:64].decode("latin-1")
            elif name in _CONDITIONAL:
                extra["conditional"] = True
            elif name == b"upgrade":
                extra["upgrade"] = True
            elif name == b"x-forwarded-for":
                # Several header lines form one list (RFC 9110 §5.3), in order.
                text = bytes(value[:1024]).decode("latin-1")
                forwarded = text if forwarded is None else f"{forwarded},{text}"
        if forwarded is not None and state is not None:
            ctx.client = client_address(ctx.client, forwarded, state)
        ctx.request_id = request_id or f"{self._id_prefix}{next(self._ids):x}"
        scope[CONTEXT_KEY] = ctx
        return ctx, authorization

    def finish(
        self, scope: Scope, ctx: RequestContext, status: int, nbytes: int, elapsed: float, aborted: bool = False
    ) -> None:
        """Count the finished request and write its log line (buffered)."""
        if self.metrics is not None:
            self.metrics.observe(ctx, status, nbytes, elapsed)
        sink = self.sink()
        if sink is None:
            return
        extra = ctx.extra
        principal = ctx.principal
        domain = ctx.domain
        raw = scope.get("raw_path") or b""
        record: dict[str, Any] = {
            "time": sink.timestamp(time.time()),
            "requestId": ctx.request_id,
            "client": ctx.client,
            "method": scope["method"][:16],
            "path": raw[:_MAX_FIELD].decode("latin-1"),
            "route": ctx.route or "-",
            "product": ctx.product,
            "domain": domain.domain_id if domain is not None else None,
            "principal": principal.name if principal is not None else None,
            "auth": principal.method if principal is not None else None,
            "status": status,
            "bytes": nbytes,
            "durationMs": round(elapsed * 1000, 3),
            "userAgent": extra.get("ua"),
            "host": extra.get("host"),
        }
        for key in _OPTIONAL:
            value = extra.get(key)
            if value is not None:
                record[key] = value
        if aborted:
            record["aborted"] = True
        quota = extra.get("quota")
        if quota is not None:
            record["quotaRemaining"] = getattr(quota, "remaining", None)
        sink.write(record)
