"""Quota step of the request path: counts each domain request against the domain's hourly budget.

Budgets (``DomainPolicy``): ``max_index_requests_per_hour`` covers ``index`` *and* ``metadata`` routes —
indexes, manifests and signatures are the small files a client polls — and
``max_download_requests_per_hour`` covers ``download`` routes (bundles, exports), the bandwidth-heavy ones.
``0`` means unlimited: no counting, no headers. Each budget is counted per client: the authenticated
principal's name, else ``ip:<client address>``; the key is ``<product>:<domain>:<budget>:<who>``.

Every counted response carries ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (integer
seconds) and ``RateLimit-Policy: <limit>;w=<window>`` (draft-ietf-httpapi-ratelimit-headers). Over quota is
``429`` problem+json with ``Retry-After``. When the backend cannot count (Redis down) it answers by its fail
mode: open lets the request through without RateLimit headers (we do not know them), closed answers ``503``
``quota-unavailable`` with ``Retry-After`` — the client is not over quota, the server cannot tell.

Runs after authentication, so rejected credentials never consume a budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import Send

from stella_mirror.server.context import RequestContext
from stella_mirror.server.middleware.domain import Refusal
from stella_mirror.server.problems import send_problem
from stella_mirror.server.quotas.backend import QuotaBackend, QuotaDecision

log = logging.getLogger(__name__)

_BUDGETS = {"index": "index", "metadata": "index", "download": "download"}
_ERROR_LOG_INTERVAL = 30.0


def quota_key(ctx: RequestContext, budget: str) -> str:
    """The counter key for this request: ``<product>:<domain>:<budget>:<principal or ip:client>``."""
    assert ctx.domain is not None
    principal = ctx.principal
    who = principal.name if principal is not None and principal.method != "anonymous" else f"ip:{ctx.client}"
    return f"{ctx.product or ctx.domain.product}:{ctx.domain.domain_id}:{budget}:{who}"


def exceeded_detail(budget: str, limit: int, window_seconds: int) -> str:
    """The ``detail`` of a 429 ``quota-exceeded`` problem (the origin's, and the gateway's rendered copy)."""
    return f"the {budget} request quota of {limit} per {window_seconds} s for this domain is used up"


def ratelimit_headers(decision: QuotaDecision, window_seconds: int) -> dict[str, str]:
    """The ``RateLimit-*`` headers for a decision."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_seconds),
        "RateLimit-Policy": f"{decision.limit};w={window_seconds}",
    }


_CONSTANT_HEADERS: dict[tuple[int, int], tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = {}


def ratelimit_raw(decision: QuotaDecision, window_seconds: int) -> list[tuple[bytes, bytes]]:
    """The same headers as ASGI ``(name, value)`` byte pairs (formatted straight to bytes: every request; the
    limit and policy, which only depend on the configuration, once)."""
    constant = _CONSTANT_HEADERS.get((decision.limit, window_seconds))
    if constant is None:
        if len(_CONSTANT_HEADERS) >= 1024:
            _CONSTANT_HEADERS.clear()
        constant = _CONSTANT_HEADERS[(decision.limit, window_seconds)] = (
            (b"ratelimit-limit", b"%d" % decision.limit),
            (b"ratelimit-policy", b"%d;w=%d" % (decision.limit, window_seconds)),
        )
    return [
        constant[0],
        (b"ratelimit-remaining", b"%d" % decision.remaining),
        (b"ratelimit-reset", b"%d" % decision.reset_seconds),
        constant[1],
    ]


class QuotaGate:
    """Per-domain quotas with a :class:`QuotaBackend`: :meth:`admit` counts a request and answers 429/503
    itself, or returns the ``RateLimit-*`` headers the response must carry.

    ``backend`` returns the *current* backend (so a reload can swap it). ``on_reject(ctx)`` is called for
    every ``429`` (metrics); ``on_unavailable(ctx)`` for every request the backend could not count. The
    decision is left in ``ctx.extra["quota"]`` for the access log.
    """

    def __init__(
        self,
        backend: Callable[[], QuotaBackend],
        window_seconds: int = 3600,
        on_reject: Callable[[RequestContext], None] | None = None,
        on_unavailable: Callable[[RequestContext], None] | None = None,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.backend = backend
        self.window = window_seconds
        self.on_reject = on_reject
        self.on_unavailable = on_unavailable
        self._error_logged_at = float("-inf")

    def limit_for(self, ctx: RequestContext) -> tuple[str, int] | None:
        """The budget name and limit that apply to this request, or ``None`` when it is not counted."""
        budget = _BUDGETS.get(ctx.route_kind)
        if ctx.domain is None or budget is None:
            return None
        if budget == "index":
            limit = ctx.domain.max_index_requests_per_hour
        else:
            limit = ctx.domain.max_download_requests_per_hour
        return (budget, limit) if limit > 0 else None

    async def admit(self, ctx: RequestContext, send: Send) -> list[tuple[bytes, bytes]] | None:
        """Count this request. ``None``: the response (429, or 503 when the backend cannot count and fails
        closed) has been sent. Otherwise the headers to add to the response (empty when not counted, or
        when the backend could not count and fails open: we do not know the numbers)."""
        applies = self.limit_for(ctx)
        if applies is None:
            return []
        budget, limit = applies
        verdict = self._verdict(ctx, budget, limit, await self._hit(quota_key(ctx, budget), limit))
        if isinstance(verdict, list):
            return verdict
        await send_problem(send, *verdict)
        return None

    def _verdict(
        self, ctx: RequestContext, budget: str, limit: int, decision: QuotaDecision
    ) -> list[tuple[bytes, bytes]] | Refusal:
        """The headers of an admitted request or the problem to answer (and the metrics of either)."""
        ctx.extra["quota"] = decision
        if decision.degraded:
            if self.on_unavailable is not None:
                self.on_unavailable(ctx)
            if decision.allowed:
                return []
            return (
                503,
                "quota-unavailable",
                "Quota service unavailable",
                "the server cannot check request quotas right now; retry later",
                {"Retry-After": str(decision.reset_seconds)},
            )
        if not decision.allowed:
            if self.on_reject is not None:
                self.on_reject(ctx)
            return (
                429,
                "quota-exceeded",
                "Too many requests",
                exceeded_detail(budget, limit, self.window),
                {**ratelimit_headers(decision, self.window), "Retry-After": str(decision.reset_seconds)},
            )
        return ratelimit_raw(decision, self.window)

    async def _hit(self, key: str, limit: int) -> QuotaDecision:
        try:
            return await self.backend().hit(key, limit, self.window)
        except Exception as exc:
            return self._failed(exc, limit)

    def _failed(self, exc: Exception, limit: int) -> QuotaDecision:
        """A backend that raised (they promise not to) must not turn into a 500 per request: the request goes
        through as "degraded", logged at most every 30 s."""
        now = time.monotonic()
        if now - self._error_logged_at >= _ERROR_LOG_INTERVAL:
            self._error_logged_at = now
            log.warning("quota backend failed (%s: %s); letting requests through", type(exc).__name__, exc)
        return QuotaDecision(allowed=True, limit=limit, remaining=limit, reset_seconds=1, degraded=True)
