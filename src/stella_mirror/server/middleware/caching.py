"""Caching: ``Cache-Control`` on successful file responses, by route class (runbook §5, S7).

* payloads — manifests, bundles, signatures, Excititor artifacts, and anything under a pinned export
  (``@<exportId>``) — never change under their URL within an export: ``public, max-age=300, immutable``;
* indexes — Concelier ``index.json`` (+ signatures), Excititor ``index``, the domain list, export metadata —
  change on every publish: ``public, max-age=60``.

Domains that require authentication get neither ``public`` nor ``immutable``: ``max-age=N, must-revalidate``
with ``Vary: Authorization`` (the gateway adds the ``Vary``). Under RFC 9111 §3.5 ``public`` would let a
shared cache (a CDN) answer a request with other, or no, credentials from a response to an authenticated one;
without it a shared cache may only reuse such a response because of ``must-revalidate``, and ``Vary:
Authorization`` limits that reuse to requests carrying the very same ``Authorization`` value — one caller's
payload never reaches a caller without that credential (tests/e2e/test_gateway_cdn.py, with Varnish).

The max-ages are ``mirror.cache`` (defaults 300 and 60, the runbook's recommended TTLs).

Only ``200``/``206``/``304`` get these; errors keep the ``no-store`` the problem helpers set. The class comes
from the route parsed by :mod:`stella_mirror.server.middleware.domain`; the gateway
(:mod:`stella_mirror.server.gateway`) adds the header as the response starts.
"""

from __future__ import annotations

from functools import lru_cache

from stella_mirror.config import CacheConfig
from stella_mirror.server.middleware.domain import Target


@lru_cache(maxsize=8)
def _values(index: int, payload: int, private: bool) -> dict[str, bytes]:
    if private:
        return {"payload": b"max-age=%d, must-revalidate" % payload, "index": b"max-age=%d, must-revalidate" % index}
    return {"payload": b"public, max-age=%d, immutable" % payload, "index": b"public, max-age=%d" % index}


CACHEABLE = frozenset({200, 206, 304})
"""Statuses that get a ``Cache-Control`` by route class."""


def cache_control(target: Target | None, config: CacheConfig, authenticated: bool = False) -> bytes | None:
    """The ``Cache-Control`` value for successful responses to ``target`` (None: leave the response alone);
    ``authenticated``: the domain requires credentials (no ``public``, see the module's text)."""
    if target is None or not target.cache:
        return None
    return _values(config.index_max_age_seconds, config.payload_max_age_seconds, authenticated).get(target.cache)
