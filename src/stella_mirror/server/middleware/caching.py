"""Caching middleware: ``Cache-Control`` on successful file responses, by route class (runbook §5, S7).

* payloads — manifests, bundles, signatures, Excititor artifacts, and anything under a pinned export
  (``@<exportId>``) — never change under their URL within an export: ``public, max-age=300, immutable``;
* indexes — Concelier ``index.json`` (+ signatures), Excititor ``index``, the domain list, export metadata —
  change on every publish: ``public, max-age=60``.

Only ``200``/``206``/``304`` get these; errors keep the ``no-store`` the problem helpers set. The class comes
from the route parsed by :mod:`stella_mirror.server.middleware.domain`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stella_mirror.server.context import CONTEXT_KEY, RequestContext

PAYLOAD = b"public, max-age=300, immutable"
INDEX = b"public, max-age=60"
_VALUES = {"payload": PAYLOAD, "index": INDEX}
_CACHEABLE = frozenset({200, 206, 304})


class CachingMiddleware:
    """Raw ASGI middleware adding ``Cache-Control`` to cacheable responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope.get(CONTEXT_KEY) if scope["type"] == "http" else None
        target = ctx.extra.get("target") if isinstance(ctx, RequestContext) else None
        value = _VALUES.get(target.cache) if target is not None and target.cache else None
        if value is None:
            await self.app(scope, receive, send)
            return

        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in _CACHEABLE:
                message["headers"] = [*message.get("headers", ()), (b"cache-control", value)]
            await send(message)

        await self.app(scope, receive, send_cached)
