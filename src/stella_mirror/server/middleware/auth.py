"""Authentication middleware: sets ``ctx.principal`` or answers 401/403 with a problem document.

Runs after routing (which puts a :class:`~stella_mirror.server.context.RequestContext` in the scope; see
:mod:`stella_mirror.server.gateway`) and before quotas, so rejected credentials never consume a client's
quota. Ops routes (context without a domain: ``/healthz``, ``/metrics``...) and non-HTTP scopes pass through
untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.authenticator import Authenticator
from stella_mirror.server.authn.failure import AuthFailure
from stella_mirror.server.context import CONTEXT_KEY, RequestContext
from stella_mirror.server.problems import send_problem

log = logging.getLogger(__name__)

_TITLES = {401: "Authentication required", 403: "Insufficient scope"}
_SLUGS = {401: "unauthorized", 403: "insufficient-scope"}
_CONFIG_LOG_INTERVAL = 30.0


def _authorization(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None


def _context(scope: Scope) -> RequestContext | None:
    # get_context() is typed for dict; an ASGI scope is a MutableMapping, so read the key directly.
    ctx = scope.get(CONTEXT_KEY) if scope["type"] == "http" else None
    return ctx if isinstance(ctx, RequestContext) else None


class AuthGate:
    """Applies an :class:`Authenticator` to a request: :meth:`admit` sets ``ctx.principal`` or answers
    401/403 (503 when the domain's htpasswd file cannot be read) itself.

    ``authenticator`` returns the *current* authenticator, so a reload can swap it atomically.
    ``on_failure(ctx, reason)`` is called for every rejected request (metrics); it must not raise.
    """

    def __init__(
        self,
        authenticator: Callable[[], Authenticator],
        on_failure: Callable[[RequestContext, str], None] | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.on_failure = on_failure
        self._config_logged_at = float("-inf")

    def admit_now(self, ctx: RequestContext, authorization: str | None) -> bool:
        """Set ``ctx.principal`` and return True when the request is authenticated without waiting (see
        :meth:`Authenticator.authenticate_now`); False otherwise, with nothing recorded — the request then
        goes through :meth:`admit`."""
        domain = ctx.domain
        assert domain is not None
        principal = self.authenticator().authenticate_now(domain, authorization)
        if principal is None:
            return False
        ctx.principal = principal
        return True

    async def admit(self, ctx: RequestContext, authorization: str | None, send: Send) -> bool:
        """Authenticate a request to ``ctx.domain`` (which must be set); False when answered here."""
        domain = ctx.domain
        assert domain is not None
        try:
            ctx.principal = await self.authenticator().authenticate_async(domain, authorization)
        except AuthFailure as failure:
            if self.on_failure is not None:
                self.on_failure(ctx, failure.reason)
            headers = {"WWW-Authenticate": failure.challenge} if failure.challenge else {}
            await send_problem(
                send,
                failure.status,
                _SLUGS.get(failure.status, "unauthorized"),
                _TITLES.get(failure.status, "Unauthorized"),
                failure.detail,
                headers,
            )
            return False
        except ConfigError as exc:
            # An htpasswd file that only fails when first used (not preloaded at startup): the operator's
            # problem, not the client's. Log it (path and line, never a secret) at most every 30 s.
            now = time.monotonic()
            if now - self._config_logged_at >= _CONFIG_LOG_INTERVAL:
                self._config_logged_at = now
                log.error("authentication unavailable for domain %s: %s", domain.domain_id, exc)
            await send_problem(
                send,
                503,
                "auth-unavailable",
                "Authentication unavailable",
                "the server cannot check credentials for this domain right now",
            )
            return False
        return True


class AuthMiddleware(AuthGate):
    """:class:`AuthGate` as a raw ASGI middleware (for stacks other than the server's fused gateway)."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Callable[[], Authenticator],
        on_failure: Callable[[RequestContext, str], None] | None = None,
    ) -> None:
        super().__init__(authenticator, on_failure)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = _context(scope)
        if ctx is None or ctx.domain is None or await self.admit(ctx, _authorization(scope), send):
            await self.app(scope, receive, send)
