"""Authentication step of the request path: sets ``ctx.principal`` or answers 401/403 with a problem document.

The gateway (:mod:`stella_mirror.server.gateway`) runs it after routing and before quotas, so rejected
credentials never consume a client's quota; ops routes (``/healthz``, ``/metrics``...) do not come here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import Send

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.authenticator import Authenticator
from stella_mirror.server.authn.failure import AuthFailure
from stella_mirror.server.context import DomainPolicy, RequestContext
from stella_mirror.server.problems import send_problem

log = logging.getLogger(__name__)

_TITLES = {401: "Authentication required", 403: "Insufficient scope"}
_SLUGS = {401: "unauthorized", 403: "insufficient-scope"}
_CONFIG_LOG_INTERVAL = 30.0


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

    def required(self, domain: DomainPolicy) -> bool:
        """Whether ``domain`` refuses anonymous callers (its answers then depend on the credentials)."""
        return self.authenticator().required(domain)

    async def admit(self, ctx: RequestContext, authorization: str | None, send: Send) -> bool:
        """Authenticate a request to ``ctx.domain`` (which must be set); False when answered here."""
        domain = ctx.domain
        assert domain is not None
        try:
            ctx.principal = await self.authenticator().authenticate(domain, authorization)
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
