"""Per-request context shared by the gateway steps and the routes.

The gateway (its access-log and routing steps) resolves which product and mirror domain a request addresses
and stores a :class:`RequestContext` in the ASGI scope under :data:`CONTEXT_KEY`; authentication fills in the
principal, quotas read both, the access log reports them. Keeping this one small type in its own module
lets each middleware stay in its own file without importing the others.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Product = Literal["concelier", "excititor"]
RouteKind = Literal["index", "download", "metadata", "ops"]

CONTEXT_KEY = "stella_mirror.context"

SCOPES: dict[str, str] = {"concelier": "concelier.mirror.read", "excititor": "excititor.mirror.read"}
"""The Authority scope a bearer token needs for each product line (runbook §1)."""


@dataclass(frozen=True)
class DomainPolicy:
    """Everything the gateway needs to know about one mirror domain of one product."""

    product: Product
    domain_id: str
    display_name: str = ""
    require_authentication: bool = False
    htpasswd: Path | None = None
    accepted_scopes: tuple[str, ...] = ()
    """Token scopes that open this domain; empty means the product's default scope (SCOPES)."""
    max_index_requests_per_hour: int = 0
    """0 means unlimited."""
    max_download_requests_per_hour: int = 0
    hostnames: tuple[str, ...] = ()
    """Host names this domain answers on; empty means any host."""

    @property
    def realm(self) -> str:
        return self.domain_id

    def scopes(self) -> tuple[str, ...]:
        return self.accepted_scopes or (SCOPES[self.product],)


@dataclass(frozen=True)
class Principal:
    """Who made the request. ``name`` is safe to log (a user name or token subject, never a secret)."""

    name: str
    method: Literal["basic", "bearer", "anonymous"]
    scopes: frozenset[str] = frozenset()


@dataclass
class RequestContext:
    """What the gateway learned about one request."""

    request_id: str
    product: Product | None = None
    domain: DomainPolicy | None = None
    route_kind: RouteKind = "ops"
    route: str = ""
    """A low-cardinality route label for metrics and logs, e.g. ``concelier.bundle``."""
    principal: Principal | None = None
    client: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def get_context(scope: MutableMapping[str, Any]) -> RequestContext | None:
    """The request's context, when the gateway has set one."""
    ctx = scope.get(CONTEXT_KEY)
    return ctx if isinstance(ctx, RequestContext) else None
