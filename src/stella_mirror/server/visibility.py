"""Which domains a caller may see: the domains a request with the same credentials, to the same host, would
be admitted to. The Concelier index, the Excititor domain list and the status page show only these, so none
ever reveals a domain the caller may not read (a host of one domain does not reveal the others either).

Deciding costs at most one bcrypt check per request (:class:`~stella_mirror.server.authn.authenticator.CheckBudget`):
the domains whose htpasswd file lists the caller's user come first, verdicts are remembered per file and
credential (a domain sharing the file is decided by the same check), and a domain that would need a second
check is not shown on this request. So a request carrying a made-up credential costs one bcrypt however many
domains there are, and a repeated one none for a while.
"""

from __future__ import annotations

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.authenticator import CheckBudget
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


def served_on(state: ServerState, product: Product, host: str) -> list[DomainPolicy]:
    """The domains served on ``host``: those bound to it, and those bound to no host."""
    return [p for p in state.site(product).domains.values() if not p.hostnames or host in p.hostnames]


async def readable(
    state: ServerState, product: Product, host: str, authorization: str | None, budget: CheckBudget | None = None
) -> frozenset[str]:
    """The ids of the domains of ``product`` the caller may read on ``host`` (credentials checked as for a
    download). ``budget``: the request's bcrypt checks, when it asks for both products (default: one)."""
    auth = state.authenticator
    candidates = served_on(state, product, host)
    if auth is None:
        return frozenset(p.domain_id for p in candidates)
    budget = budget or CheckBudget(1)
    out = set()
    for policy in auth.listed_first(candidates, authorization):
        try:
            await auth.authenticate(policy, authorization, budget)
        except (AuthFailure, ConfigError):
            continue
        out.add(policy.domain_id)
    return frozenset(out)
