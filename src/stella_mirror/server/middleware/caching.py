"""Caching: ``Cache-Control`` on successful file responses, by route class (runbook §5, S7).

* payloads — manifests, bundles, signatures, Excititor artifacts, and anything under a pinned export
  (``@<exportId>``) — never change under their URL within an export: ``public, max-age=300, immutable``;
* indexes — Concelier ``index.json`` (+ signatures), Excititor ``index``, the domain list, export metadata —
  change on every publish: ``public, max-age=60``.

Only ``200``/``206``/``304`` get these; errors keep the ``no-store`` the problem helpers set. The class comes
from the route parsed by :mod:`stella_mirror.server.middleware.domain`; the gateway
(:mod:`stella_mirror.server.gateway`) adds the header as the response starts.
"""

from __future__ import annotations

from stella_mirror.server.middleware.domain import Target

PAYLOAD = b"public, max-age=300, immutable"
INDEX = b"public, max-age=60"
_VALUES = {"payload": PAYLOAD, "index": INDEX}


CACHEABLE = frozenset({200, 206, 304})
"""Statuses that get a ``Cache-Control`` by route class."""


def cache_control(target: Target | None) -> bytes | None:
    """The ``Cache-Control`` value for successful responses to ``target`` (None: leave the response alone)."""
    return _VALUES.get(target.cache) if target is not None and target.cache else None
