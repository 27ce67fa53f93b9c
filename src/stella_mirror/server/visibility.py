"""Which domains a caller may see: the domains a request with the same credentials, to the same host, would
be admitted to. The Concelier index and the status page show only these, so neither ever reveals a domain
the caller may not read (a host of one domain does not reveal the others either)."""

from __future__ import annotations

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.failure import AuthFailure
from stella_mirror.server.context import DomainPolicy, Product
from stella_mirror.server.state import ServerState


def restricted(state: ServerState, product: Product) -> bool:
    """Whether callers may see different domains of ``product``: some domain requires authentication or is
    bound to host names. When not, everyone sees every domain."""
    auth = state.authenticator
    return any(
        p.hostnames or (auth.required(p) if auth is not None else p.require_authentication)
        for p in state.site(product).domains.values()
    )


def _candidates(state: ServerState, product: Product, host: str) -> list[DomainPolicy]:
    """The domains served on ``host``: those bound to it, and those bound to no host."""
    return [p for p in state.site(product).domains.values() if not p.hostnames or host in p.hostnames]


async def readable(state: ServerState, product: Product, host: str, authorization: str | None) -> frozenset[str]:
    """The ids of the domains of ``product`` the caller may read on ``host`` (credentials checked as for a
    download)."""
    auth = state.authenticator
    out = set()
    for policy in _candidates(state, product, host):
        if auth is not None:
            try:
                await auth.authenticate_async(policy, authorization)
            except (AuthFailure, ConfigError):
                continue
        out.add(policy.domain_id)
    return frozenset(out)


def readable_now(state: ServerState, product: Product, host: str, authorization: str | None) -> frozenset[str] | None:
    """:func:`readable` when every domain's answer is known without waiting (see
    :meth:`~stella_mirror.server.authn.authenticator.Authenticator.settle_now`); None otherwise."""
    auth = state.authenticator
    out = set()
    for policy in _candidates(state, product, host):
        if auth is not None:
            outcome = auth.settle_now(policy, authorization)
            if outcome is None:
                return None
            if isinstance(outcome, AuthFailure):
                continue
        out.add(policy.domain_id)
    return frozenset(out)
