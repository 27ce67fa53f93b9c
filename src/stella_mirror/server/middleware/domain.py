"""Routing: which product, mirror domain and route a request addresses — or a 4xx right away.

:func:`route_request` runs before authentication and quotas (in :mod:`stella_mirror.server.gateway`) and
fills the :class:`~stella_mirror.server.context.RequestContext` they read. Decisions made here:

* the *raw* request target is checked before anything is decoded: NUL, backslashes, ``.``/``..``
  segments, and percent-encoded ``/``, ``\\``, ``.``, ``%`` or NUL are refused with ``400`` (so neither
  ``%2e%2e`` nor double encoding can smuggle a traversal past the router); targets over 4 KiB get ``414``;
* the decoded path must match one of the fixed routes below, with every variable segment in a bounded
  alphabet (``[A-Za-z0-9._-]``, no leading dot) — anything else is ``404``; only ``GET``/``HEAD`` (``405``);
* a domain must be configured for that product (else ``404``) and, when it lists host names, the request's
  ``Host`` must be one of them (else ``404``: a credential of one domain never opens another, and a
  host of one domain does not reveal the others);
* product-wide routes (Concelier ``index.json``, Excititor ``domains``) use the policy of the domain whose
  host name the request came to, else the product-wide policy.

Routes (``@<exportId>`` optionally pins an export still kept by the publisher):

    /concelier/exports[/@<id>]/index.json | index.json.jws | index.json.sig
    /concelier/exports[/@<id>]/mirror/<domain>/manifest.json | bundle.json | bundle.json.jws | bundle.json.sig
    /concelier/exports[/@<id>]/mirror/<domain>/index.json | index.json.jws | index.json.sig  (the domain's own index)
    /excititor/mirror/domains
    /excititor/mirror[/@<id>]/<domain>/index | index.jws | index.sig      (also under /excititor/mirror/domains/)
    /excititor/mirror[/@<id>]/<domain>/exports/<exportKey>                 (metadata: the index entry)
    /excititor/mirror[/@<id>]/<domain>/exports/<exportKey>/download | download.jws | download.sig
    /healthz  /readyz  /metrics  /status  /status.json
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import Scope

from stella_mirror.bundle.layout import safe_segment
from stella_mirror.server.context import Product, RequestContext, RouteKind
from stella_mirror.server.state import ServerState

MAX_TARGET = 4096
_BAD_RAW = re.compile(rb"[\x00\\]|%(?:2[eEfF5]|5[cC]|00)")
_METHODS = ("GET", "HEAD")

CONCELIER_FILES: dict[str, tuple[str, RouteKind]] = {
    "manifest.json": ("concelier.manifest", "metadata"),
    "bundle.json": ("concelier.bundle", "download"),
    "bundle.json.jws": ("concelier.bundle.jws", "metadata"),
    "bundle.json.sig": ("concelier.bundle.sig", "metadata"),
}
CONCELIER_INDEX_FILES = {
    "index.json": "concelier.index",
    "index.json.jws": "concelier.index.jws",
    "index.json.sig": "concelier.index.sig",
}
EXCITITOR_INDEX_FILES = {"index": "", "index.jws": ".jws", "index.sig": ".sig"}
EXCITITOR_DOWNLOADS = {"download": "", "download.jws": ".jws", "download.sig": ".sig"}


@dataclass(frozen=True, slots=True)
class Target:
    """What a request asks for, parsed once from the path."""

    handler: str
    """Which route function answers: ``concelier.index``, ``concelier.file``, ``excititor.domains``,
    ``excititor.index``, ``excititor.export``, ``excititor.download``, ``ops.healthz``…"""
    product: Product | None
    route: str
    """Low-cardinality label for metrics and logs."""
    kind: RouteKind
    cache: str | None
    """``index`` (max-age=60), ``payload`` (max-age=300, immutable) or None."""
    domain_id: str | None = None
    pin: str | None = None
    parts: tuple[str, ...] = ()
    """Path of the file relative to the export directory (file routes)."""
    export_key: str | None = None
    suffix: str = ""
    """``""`` for the document itself, ``.jws``/``.sig`` for its signatures."""


OPS = {
    "/": Target("ops.home", None, "home", "ops", None),
    "/healthz": Target("ops.healthz", None, "healthz", "ops", None),
    "/readyz": Target("ops.readyz", None, "readyz", "ops", None),
    "/metrics": Target("ops.metrics", None, "metrics", "ops", None),
    "/status": Target("ops.status", None, "status", "ops", None),
    "/status.json": Target("ops.status.json", None, "status", "ops", None),
}


def check_raw_target(raw_path: bytes) -> tuple[int, str] | None:
    """Refuse a raw request path we never serve: ``(status, reason)`` or None when acceptable."""
    if len(raw_path) > MAX_TARGET:
        return 414, "request target too long"
    if _BAD_RAW.search(raw_path):
        return 400, "encoded dots, slashes or percent signs, backslashes and NUL are not accepted in paths"
    if not raw_path.startswith(b"/"):
        return 400, "request target must be an absolute path"
    for seg in raw_path.split(b"/"):
        if seg in (b".", b".."):
            return 400, "dot segments are not accepted in paths"
    return None


def _pin(rest: list[str]) -> tuple[str | None, list[str]] | None:
    if rest and rest[0].startswith("@"):
        pin = rest[0][1:]
        if not safe_segment(pin):
            return None
        return pin, rest[1:]
    return None, rest


def parse_route(path: str) -> Target | None:
    """Map a decoded path to a :class:`Target` (None: no such route)."""
    ops = OPS.get(path)
    if ops is not None:
        return ops
    segs = path[1:].split("/")
    if len(segs) < 3 or len(segs) > 8:
        return None
    if segs[0] == "concelier" and segs[1] == "exports":
        pinned = _pin(segs[2:])
        if pinned is None:
            return None
        pin, rest = pinned
        cache = "payload" if pin else "index"
        if len(rest) == 1 and rest[0] in CONCELIER_INDEX_FILES:
            return Target(
                "concelier.index",
                "concelier",
                CONCELIER_INDEX_FILES[rest[0]],
                "index",
                cache,
                pin=pin,
                parts=("mirror", rest[0]),
            )
        if len(rest) == 3 and rest[0] == "mirror" and rest[2] in CONCELIER_INDEX_FILES and safe_segment(rest[1]):
            # The domain's own signed index (the index with only this domain), under the domain's policy.
            return Target(
                "concelier.file",
                "concelier",
                CONCELIER_INDEX_FILES[rest[2]].replace("concelier.index", "concelier.domain-index"),
                "index",
                cache,
                domain_id=rest[1],
                pin=pin,
                parts=("mirror", rest[1], rest[2]),
            )
        if len(rest) == 3 and rest[0] == "mirror" and rest[2] in CONCELIER_FILES and safe_segment(rest[1]):
            route, kind = CONCELIER_FILES[rest[2]]
            return Target(
                "concelier.file",
                "concelier",
                route,
                kind,
                "payload",
                domain_id=rest[1],
                pin=pin,
                parts=("mirror", rest[1], rest[2]),
            )
        return None
    if segs[0] == "excititor" and segs[1] == "mirror":
        if len(segs) == 3 and segs[2] == "domains":
            return Target("excititor.domains", "excititor", "excititor.domains", "index", "index")
        pinned = _pin(segs[2:])
        if pinned is None:
            return None
        pin, rest = pinned
        if len(rest) == 3 and rest[0] == "domains":
            rest = rest[1:]  # alias: /excititor/mirror/domains/<domain>/index
        if not rest or not safe_segment(rest[0]):
            return None
        domain = rest[0]
        if len(rest) == 2 and rest[1] in EXCITITOR_INDEX_FILES:
            suffix = EXCITITOR_INDEX_FILES[rest[1]]
            return Target(
                "excititor.index",
                "excititor",
                "excititor.index" + suffix,
                "index",
                "payload" if pin else "index",
                domain_id=domain,
                pin=pin,
                parts=("mirror", domain, "index.json" + suffix),
                suffix=suffix,
            )
        if len(rest) in (3, 4) and rest[1] == "exports" and safe_segment(rest[2]):
            key = rest[2]
            if len(rest) == 3:
                return Target(
                    "excititor.export",
                    "excititor",
                    "excititor.export",
                    "metadata",
                    "payload" if pin else "index",
                    domain_id=domain,
                    pin=pin,
                    export_key=key,
                )
            if rest[3] in EXCITITOR_DOWNLOADS:
                suffix = EXCITITOR_DOWNLOADS[rest[3]]
                dl_kind: RouteKind = "metadata" if suffix else "download"
                return Target(
                    "excititor.download",
                    "excititor",
                    "excititor.download" + suffix,
                    dl_kind,
                    "payload",
                    domain_id=domain,
                    pin=pin,
                    export_key=key,
                    suffix=suffix,
                )
        return None
    return None


def request_host(ctx: RequestContext) -> str:
    """The request's host name (lower-case, no port) as recorded by :meth:`AccessLog.begin`."""
    host: str = ctx.extra.get("host", "")
    return host


_MISSING = object()
_HOSTS: dict[bytes, str] = {}
_ROUTES: dict[bytes, Target | tuple[int, str] | None] = {}
_CACHE_LIMIT = 4096
"""Parsed hosts and routes are memoised (a mirror sees few distinct ones); the maps are cleared when full."""


def normalise_host(value: bytes) -> str:
    """``Host`` header → lower-case name without port (IPv6 literals keep their brackets)."""
    host = _HOSTS.get(value)
    if host is None:
        host = _normalise_host(value)
        if len(_HOSTS) >= _CACHE_LIMIT:
            _HOSTS.clear()
        _HOSTS[value] = host
    return host


def _normalise_host(value: bytes) -> str:
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    return text.rsplit(":", 1)[0].rstrip(".") if ":" in text else text.rstrip(".")


Refusal = tuple[int, str, str, str, dict[str, str] | None]
"""A problem response decided while routing: ``(status, slug, title, detail, extra headers)``."""

_NOT_FOUND: Refusal = (404, "not-found", "Not found", "no such route", None)
_NOT_ALLOWED: Refusal = (
    405,
    "method-not-allowed",
    "Method not allowed",
    "only GET and HEAD are supported",
    {"Allow": "GET, HEAD"},
)
_UNKNOWN_DOMAIN: Refusal = (404, "unknown-domain", "Unknown mirror domain", "no such mirror domain on this host", None)


def _target(scope: Scope) -> Target | tuple[int, str] | None:
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    target = _ROUTES.get(raw, _MISSING)
    if target is _MISSING:
        refused = check_raw_target(raw)
        target = refused if refused is not None else parse_route(scope["path"])
        if len(raw) <= 512:  # the decoded path is a function of the raw one, so the raw path is the key
            if len(_ROUTES) >= _CACHE_LIMIT:
                _ROUTES.clear()
            _ROUTES[raw] = target
    return target  # type: ignore[return-value]


def route_request(scope: Scope, ctx: RequestContext, state: ServerState) -> Refusal | None:
    """Resolve route, product and domain of an HTTP request into ``ctx`` (``ctx.extra["host"]`` must hold the
    normalised ``Host``). Returns the problem to answer with, or None when the request goes on."""
    target = _target(scope)
    if isinstance(target, tuple):
        ctx.route = "invalid"
        status, reason = target
        if status == 400:
            return (400, "bad-request", "Bad request", reason, None)
        return (status, "uri-too-long", "URI too long", reason, None)
    if target is None:
        ctx.route = "not_found"
        return _NOT_FOUND
    ctx.route = target.route
    ctx.route_kind = target.kind
    ctx.extra["target"] = target
    if scope["method"] not in _METHODS:
        return _NOT_ALLOWED
    if target.product is None:
        return None
    site = state.sites[target.product]
    ctx.product = target.product
    if not site.served:
        return (404, "not-found", "Not found", f"{target.product} is not served here", None)
    host = request_host(ctx)
    if target.domain_id is None:
        ctx.domain = site.wide_policy(host)
        return None
    policy = site.domain(target.domain_id)
    if policy is None or (policy.hostnames and host not in policy.hostnames):
        return _UNKNOWN_DOMAIN
    ctx.domain = policy
    return None
