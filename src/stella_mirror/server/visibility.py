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


async def readable(state: ServerState, product: Product, host: str, authorization: str | None) -> list[DomainPolicy]:
    """The domains of ``product`` the caller may read on ``host`` (credentials checked as for a download)."""
    auth = state.authenticator
    out: list[DomainPolicy] = []
    for policy in state.site(product).domains.values():
        if policy.hostnames and host not in policy.hostnames:
            continue
        if auth is not None:
            try:
                await auth.authenticate_async(policy, authorization)
            except (AuthFailure, ConfigError):
                continue
        out.append(policy)
    return out
