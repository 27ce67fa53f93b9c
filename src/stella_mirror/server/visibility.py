"""Which domains a caller may see: the domains a request with the same credentials, to the same host, would
be admitted to. The Concelier index, the Excititor domain list and the status page show only these, so none
ever reveals a domain the caller may not read (a host of one domain does not reveal the others either).

Deciding costs at most one bcrypt check per request (:class:`~stella_mirror.server.authn.authenticator.CheckBudget`):
the domains whose htpasswd file lists the caller's user come first, verdicts are remembered per file and
credential (a domain sharing the file is decided by the same check), and a domain that would need a second
check is not shown on this request. So a request carrying a made-up credential costs one bcrypt however many
domains there are, and a repeated one none for a while.

A complete answer is remembered for :data:`TTL` seconds per configuration generation, product, host and
credential (keyed by a MAC of the ``Authorization`` value, never the value): an index request of a client that
polls costs one dictionary lookup, not one authentication per domain. A reload starts afresh.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.authenticator import CheckBudget
from stella_mirror.server.authn.failure import AuthFailure
from stella_mirror.server.context import DomainPolicy, Product
from stella_mirror.server.state import ServerState

TTL = 1.0
"""Seconds a caller's readable domains are remembered (a revoked credential stops opening them within this)."""

_LIMIT = 4096
_KEY = secrets.token_bytes(32)


def _credential(authorization: str | None) -> bytes | None:
    if authorization is None:
        return None
    return hashlib.blake2b(authorization.encode("latin-1", "replace"), key=_KEY, digest_size=16).digest()


def restricted(state: ServerState, product: Product) -> bool:
    """Whether callers may see different domains of ``product``: some domain requires authentication or is
    bound to host names (decided once per configuration generation). When not, everyone sees every domain."""
    return product in state.restricted


def restricted_products(state: ServerState) -> frozenset[Product]:
    """The products whose callers may see different domains (see :func:`restricted`)."""
    auth = state.authenticator
    return frozenset(
        product
        for product, site in state.sites.items()
        if any(
            p.hostnames or (auth.required(p) if auth is not None else p.require_authentication)
            for p in site.domains.values()
        )
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
    key = (product, host, _credential(authorization))
    now = time.monotonic()
    remembered = state.visibility.get(key)
    if remembered is not None and remembered[0] > now:
        return remembered[1]
    budget = budget or CheckBudget(1)
    refused_before = budget.refused
    out = set()
    for policy in auth.listed_first(candidates, authorization):
        try:
            await auth.authenticate(policy, authorization, budget)
        except (AuthFailure, ConfigError):
            continue
        out.add(policy.domain_id)
    answer = frozenset(out)
    if budget.refused == refused_before:  # every domain decided: the answer holds for everyone with this credential
        if len(state.visibility) >= _LIMIT:
            state.visibility.clear()
        state.visibility[key] = (now + TTL, answer)
    return answer
