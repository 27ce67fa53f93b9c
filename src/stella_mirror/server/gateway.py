"""The request path of the mirror server: every HTTP request takes these steps, in this order, once.

    AccessLog.begin        request id, context, one pass over the request headers   (middleware.access_log)
    refuse an Upgrade      400: no protocol is spoken here but HTTP/1.1
    route_request          route, product, domain — or 400/404/405/414               (middleware.domain)
    ops routes             /healthz /readyz /metrics (token) /status (rate limited)  (routes_ops, routes_status)
    AuthGate.admit         principal — or 401/403/503                               (middleware.auth)
    index_domain           the Concelier index: the one domain whose index it serves  (routes_concelier)
    QuotaGate.admit        hourly budgets: RateLimit-* headers — or 429/503         (middleware.quotas)
    cache_control          Cache-Control by route class for 200/206/304             (middleware.caching)
    routes_*               the answer
    AccessLog.finish       metrics and the JSON log line: bytes sent, aborted or not

The concerns stay in their modules; this one only sequences them, with **one** ``send`` wrapper for the whole
request (:class:`Responder`) that appends the response-wide headers — ``Cache-Control`` (cacheable statuses of
file routes), ``RateLimit-*`` (counted requests), ``Vary`` (answers that depend on the credentials),
``X-Request-ID`` (always) — and counts what the server took.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable

from starlette.types import Message, Receive, Scope, Send

from stella_mirror.server import routes_concelier, routes_excititor, routes_ops, routes_status
from stella_mirror.server.context import RequestContext
from stella_mirror.server.metrics import Metrics
from stella_mirror.server.middleware.access_log import AccessLog
from stella_mirror.server.middleware.auth import AuthGate
from stella_mirror.server.middleware.caching import CACHEABLE, cache_control
from stella_mirror.server.middleware.domain import Refusal, Target, route_request
from stella_mirror.server.middleware.quotas import QuotaGate
from stella_mirror.server.problems import MEDIA_TYPE, problem_body, send_problem, send_uncached
from stella_mirror.server.quotas.memory import MemoryQuotaBackend
from stella_mirror.server.routes_common import Runtime
from stella_mirror.server.state import ServerState
from stella_mirror.server.visibility import restricted

log = logging.getLogger("stella_mirror.server")

_INTERNAL_ERROR = problem_body(500, "internal", "Internal server error", "", "")
_UPGRADE: Refusal = (400, "upgrade-refused", "Upgrade not supported", "this server speaks HTTP/1.1 only", None)
_METRICS_TOKEN: Refusal = (
    401,
    "unauthorized",
    "Authentication required",
    "/metrics needs its bearer token",
    {"WWW-Authenticate": "Bearer"},
)


class ClientGone(Exception):
    """The server could not take a response message: the client left or stalled past the send timeout."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Responder:
    """The one ``send`` wrapper of a request: appends the gateway's headers to the response start and counts
    what the server took (status, body bytes, whether the whole announced body went out).

    A body sent in several messages is watched: once the server reports the client gone (``http.disconnect``
    from ``receive``), the next message is not sent and the response counts as aborted."""

    __slots__ = ("aborted", "cache", "expected", "extra", "nbytes", "receive", "send", "status", "vary", "watch")

    def __init__(self, send: Send, request_id: str, receive: Receive | None = None) -> None:
        self.send = send
        self.receive = receive
        self.watch: asyncio.Future[None] | None = None
        self.status = 0
        self.nbytes = 0
        self.expected: int | None = None
        """The response's Content-Length (None: not announced, or a HEAD)."""
        self.aborted = False
        self.extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]
        """Appended to every response; quota headers are put in front of the request id."""
        self.cache: bytes | None = None
        """``Cache-Control`` for cacheable statuses (set once the request reached its route)."""
        self.vary = False
        """Whether the answer depends on the credentials: ``Authorization`` joins the response's one ``Vary``."""

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = status = message["status"]
            headers = message.get("headers", ())
            for name, value in headers:
                if name == b"content-length":
                    self.expected = int(value)
            if self.vary:
                headers = _vary_authorization(headers)
            if self.cache is not None and status in CACHEABLE:
                message["headers"] = [*headers, (b"cache-control", self.cache), *self.extra]
            else:
                message["headers"] = [*headers, *self.extra]
            await self.send(message)
            return
        if kind == "http.response.body" and self.receive is not None:
            if self.watch is None:
                if message.get("more_body", False):
                    self.watch = asyncio.ensure_future(_until_disconnect(self.receive))
            elif self.watch.done():
                self.aborted = True
                raise ClientGone
        try:
            await self.send(message)
        except Exception:
            self.aborted = True
            raise ClientGone from None
        if kind == "http.response.body":
            self.nbytes += len(message.get("body", b""))
        elif kind == "http.response.pathsend":
            # The server sends the file itself and does not say how much arrived: what it took is the file.
            self.nbytes = self.expected or 0

    def close(self) -> None:
        """Stop watching for the client's disconnect."""
        if self.watch is not None and not self.watch.done():
            self.watch.cancel()

    def incomplete(self, head_only: bool) -> bool:
        """Whether the response ended before its announced body (the client left, or the send timed out)."""
        if self.aborted:
            return True
        return (
            not head_only
            and self.status not in (204, 304)
            and self.expected is not None
            and (self.nbytes < self.expected)
        )


def _vary_authorization(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``Authorization`` in their ``Vary`` — one header line, as some shared caches read only
    the first."""
    out = list(headers)
    for i, (name, value) in enumerate(out):
        if name == b"vary":
            out[i] = (name, value + b", Authorization")
            return out
    out.append((b"vary", b"Authorization"))
    return out


class Gateway:
    """Answers HTTP requests (lifespan is the application's business)."""

    def __init__(
        self,
        state: Callable[[], ServerState],
        runtime: Runtime,
        access_log: AccessLog,
        auth: AuthGate,
        quotas: QuotaGate,
        metrics: Metrics | None,
    ) -> None:
        self.state = state
        self.runtime = runtime
        self.access_log = access_log
        self.auth = auth
        self.quotas = quotas
        self.metrics = metrics
        self.status_calls = MemoryQuotaBackend()
        """``/status`` requests per client address and minute (this worker's count)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        state = self.state()
        ctx, authorization = self.access_log.begin(scope, state)
        out = Responder(send, ctx.request_id, receive)
        try:
            await self._answer(scope, ctx, authorization, out, state)
        except ClientGone:
            pass
        except Exception:
            log.exception("unhandled error answering %s (request %s)", ctx.route or "-", ctx.request_id)
            if out.status == 0:
                with contextlib.suppress(Exception):
                    await send_uncached(out, 500, MEDIA_TYPE.encode(), _INTERNAL_ERROR)
        finally:
            out.close()
            aborted = out.incomplete(scope["method"] == "HEAD")
            self.access_log.finish(scope, ctx, out.status, out.nbytes, time.perf_counter() - started, aborted)

    async def _answer(
        self, scope: Scope, ctx: RequestContext, authorization: str | None, out: Responder, state: ServerState
    ) -> None:
        if "upgrade" in ctx.extra:
            ctx.route = "invalid"
            await send_problem(out, *_UPGRADE)
            return
        refusal = route_request(scope, ctx, state)
        if refusal is not None:
            await send_problem(out, *refusal)
            return
        target: Target = ctx.extra["target"]
        if target.product is None:
            await self._ops(scope, ctx, authorization, out, target, state)
            return
        if not await self.auth.admit(ctx, authorization, out):
            return
        if target.handler == "concelier.index":
            await routes_concelier.index_domain(state, ctx, authorization)  # whose index, so whose budget
        ratelimit = await self.quotas.admit(ctx, out)
        if ratelimit is None:
            return
        if ratelimit:
            out.extra[:0] = ratelimit
        assert ctx.domain is not None
        authenticated = self.auth.required(ctx.domain)
        out.cache = cache_control(target, state.config.mirror.cache, authenticated)
        # The answer depends on the credentials: an authenticated domain's, and a product-wide list that shows
        # each caller the domains it may read.
        out.vary = authenticated or (
            target.handler in ("concelier.index", "excititor.domains") and restricted(state, target.product)
        )
        if target.product == "concelier":
            await routes_concelier.serve(scope, out, self.runtime, ctx, target, authorization)
        else:
            await routes_excititor.serve(scope, out, self.runtime, ctx, target, authorization)

    async def _ops(
        self,
        scope: Scope,
        ctx: RequestContext,
        authorization: str | None,
        out: Responder,
        target: Target,
        state: ServerState,
    ) -> None:
        limits = state.config.mirror.limits
        if target.handler.startswith("ops.status"):
            decision = await self.status_calls.hit(f"ip:{ctx.client}", limits.status_requests_per_minute, 60)
            if not decision.allowed:
                await send_problem(
                    out,
                    429,
                    "too-many-requests",
                    "Too many requests",
                    f"at most {limits.status_requests_per_minute} status requests per minute",
                    {"Retry-After": str(decision.reset_seconds)},
                )
                return
            await routes_status.serve(scope, out, self.runtime, ctx, target.handler, authorization, self.metrics)
            return
        if target.handler == "ops.metrics" and state.metrics_token is not None:
            given = (authorization or "").encode("latin-1")
            if not hmac.compare_digest(given, b"Bearer " + state.metrics_token):
                await send_problem(out, *_METRICS_TOKEN)
                return
        await routes_ops.serve(scope, out, self.runtime, target.handler, self.metrics)
