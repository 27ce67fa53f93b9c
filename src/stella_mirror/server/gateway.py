"""The request path of the mirror server, fused into one ASGI callable.

What used to be five nested ASGI middlewares — access log, domain routing, authentication, quotas,
``Cache-Control`` — runs here as plain calls in that order, with **one** ``send`` wrapper for the whole
request instead of one per layer (each layer added a closure, a coroutine frame and a header-list copy
per message). The concerns stay in their modules; this one only sequences them:

    AccessLog.begin        request id, context, one pass over the request headers   (middleware.access_log)
    route_request          route, product, domain — or 400/404/405/414               (middleware.domain)
    AuthGate.admit         principal — or 401/403/503                               (middleware.auth)
    QuotaGate.admit        hourly budgets: RateLimit-* headers — or 429/503         (middleware.quotas)
    cache_control          Cache-Control by route class for 200/206/304             (middleware.caching)
    routes_*               the answer
    AccessLog.finish       metrics and the JSON log line

:meth:`Gateway.answer_now` is the same sequence for requests that need no waiting at all (a memoised small
file, a cached credential, an in-memory quota): it returns the whole response to the protocol, which writes it
from the parser callback without an ASGI cycle or task — about two thirds of a small request's cost on uvicorn.

Response headers added here, after the route's own: ``Cache-Control`` (cacheable statuses of file routes),
``RateLimit-*`` (counted requests), ``X-Request-ID`` (always).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from starlette.types import Message, Receive, Scope, Send

from stella_mirror.server import routes_concelier, routes_excititor, routes_ops, routes_status
from stella_mirror.server.context import RequestContext
from stella_mirror.server.cycle import MESSAGE as ZEROCOPY_MESSAGE
from stella_mirror.server.exports import ExportHandle
from stella_mirror.server.metrics import Metrics
from stella_mirror.server.middleware.access_log import AccessLog
from stella_mirror.server.middleware.auth import AuthGate
from stella_mirror.server.middleware.caching import CACHEABLE, cache_control
from stella_mirror.server.middleware.domain import Target, request_host, route_request
from stella_mirror.server.middleware.quotas import QuotaGate
from stella_mirror.server.problems import MEDIA_TYPE, problem_body, problem_response, send_problem, send_uncached
from stella_mirror.server.protocol import Immediate
from stella_mirror.server.routes_common import Runtime, recall_full, resolve_now
from stella_mirror.server.routes_concelier import VARY_AUTHORIZATION
from stella_mirror.server.state import ServerState
from stella_mirror.server.visibility import readable_now, restricted

log = logging.getLogger("stella_mirror.server")

_INTERNAL_ERROR = problem_body(500, "internal", "Internal server error", "", "")
_IMMEDIATE = frozenset({"concelier.index", "concelier.file", "excititor.index"})
"""Handlers whose answer can be a memoised small file (see :meth:`Gateway.answer_now`)."""


class Responder:
    """The one ``send`` wrapper of a request: records status and body bytes (for the log and metrics) and
    appends the gateway's headers to the response start."""

    __slots__ = ("cache", "extra", "nbytes", "send", "status")

    def __init__(self, send: Send, request_id: str) -> None:
        self.send = send
        self.status = 0
        self.nbytes = 0
        self.extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]
        """Appended to every response; quota headers are put in front of the request id."""
        self.cache: bytes | None = None
        """``Cache-Control`` for cacheable statuses (set once the request reached its route)."""

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            self.nbytes += len(message.get("body", b""))
        elif kind == "http.response.start":
            self.status = status = message["status"]
            headers = message.get("headers", ())
            if self.cache is not None and status in CACHEABLE:
                message["headers"] = [*headers, (b"cache-control", self.cache), *self.extra]
            else:
                message["headers"] = [*headers, *self.extra]
        elif kind == ZEROCOPY_MESSAGE:
            self.nbytes += int(message.get("count") or 0)
        await self.send(message)


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        ctx, authorization = self.access_log.begin(scope)
        out = Responder(send, ctx.request_id)
        try:
            await self._answer(scope, ctx, authorization, out)
        except Exception:
            log.exception("unhandled error answering %s (request %s)", ctx.route or "-", ctx.request_id)
            if out.status != 0:
                raise
            with contextlib.suppress(Exception):
                await send_uncached(out, 500, MEDIA_TYPE.encode(), _INTERNAL_ERROR)
        finally:
            self.access_log.finish(scope, ctx, out.status, out.nbytes, time.perf_counter() - started)

    def answer_now(self, scope: Scope) -> Immediate | None:
        """The whole response, when it is known without waiting — a small file whose answer is memoised
        (:func:`~stella_mirror.server.routes_common.recall_full`), a credential known without a bcrypt check
        or a key fetch, a quota counted in memory — else None.

        The protocol (:mod:`stella_mirror.server.protocol`) asks this first, in the parser callback, and
        writes the answer with no ASGI cycle or task; on None the request takes :meth:`__call__`, which does
        everything again. So nothing observable happens here before the answer is certain: the quota is
        counted last (and then this path answers, be it ``200`` or ``429``), failures are left to the
        ordinary path, and the log line and metrics are the same as that path's.
        """
        started = time.perf_counter()
        ctx, authorization = self.access_log.begin(scope)
        if route_request(scope, ctx, self.state()) is not None:
            return None
        target: Target = ctx.extra["target"]
        if target.product is None or target.handler not in _IMMEDIATE:
            return None
        export = resolve_now(self.runtime, target.product, target.pin)
        if export is None:
            return None
        # The memoised answer before the credential: a bearer token costs a signature check, and a request
        # that falls back (a large file, a precondition, a Range) would pay for it twice.
        vary: list[tuple[bytes, bytes]] = []
        if target.handler == "concelier.index" and restricted(self.state(), "concelier"):
            found = self._index_now(ctx, export, target, authorization)
            vary.append(VARY_AUTHORIZATION)  # the index depends on the caller's credentials
        else:
            found = recall_full(ctx, export, target.parts)
        if found is None or not self.auth.admit_now(ctx, authorization):
            return None
        verdict = self.quotas.admit_now(ctx)
        if verdict is None:
            return None
        request_id = (b"x-request-id", ctx.request_id.encode())
        head_only = scope["method"] == "HEAD"
        if isinstance(verdict, tuple):
            headers, body = problem_response(*verdict)
            headers.append(request_id)
            answer = Immediate(verdict[0], None, headers, b"" if head_only else body)
        else:
            body, static = found
            cache = cache_control(target, self.state().config.mirror.cache)
            headers = [(b"cache-control", cache), *verdict, request_id] if cache else [*verdict, request_id]
            answer = Immediate(200, static, [*headers, *vary], b"" if head_only else body)
        self.access_log.finish(scope, ctx, answer.status, len(answer.body), time.perf_counter() - started)
        return answer

    def _index_now(
        self, ctx: RequestContext, export: ExportHandle, target: Target, authorization: str | None
    ) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]] | None:
        """The Concelier index this caller is shown, when the readable domains and the export's answer for them
        are known without waiting (the ordinary path decides and remembers it first)."""
        allowed = readable_now(self.state(), "concelier", request_host(ctx), authorization)
        if allowed is None:
            return None
        remembered = routes_concelier.recall_index_answer(export, allowed, target.parts[-1].removeprefix("index.json"))
        if remembered is None or remembered[0] is None:
            return None
        answer = remembered[0]
        if isinstance(answer, tuple):
            return recall_full(ctx, export, answer)
        ctx.extra["exportId"] = export.export_id
        return answer, tuple(routes_concelier.filtered_headers(export.export_id, answer))

    async def _answer(self, scope: Scope, ctx: RequestContext, authorization: str | None, out: Responder) -> None:
        refusal = route_request(scope, ctx, self.state())
        if refusal is not None:
            await send_problem(out, *refusal)
            return
        target: Target = ctx.extra["target"]
        if target.product is None:
            if target.handler.startswith("ops.status"):
                await routes_status.serve(scope, out, self.runtime, ctx, target.handler, authorization, self.metrics)
            else:
                await routes_ops.serve(scope, out, self.runtime, target.handler, self.metrics)
            return
        if not await self.auth.admit(ctx, authorization, out):
            return
        ratelimit = await self.quotas.admit(ctx, out)
        if ratelimit is None:
            return
        if ratelimit:
            out.extra[:0] = ratelimit
        out.cache = cache_control(target, self.state().config.mirror.cache)
        if target.product == "concelier":
            if target.handler == "concelier.index" and restricted(self.state(), "concelier"):
                out.extra.append(VARY_AUTHORIZATION)
            await routes_concelier.serve(scope, out, self.runtime, ctx, target, authorization)
        else:
            await routes_excititor.serve(scope, out, self.runtime, ctx, target)
