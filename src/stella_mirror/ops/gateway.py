"""``stella-mirror gateway render``: the nginx gateway's configuration, written from the server's configuration.

Domains, their host names, authentication, quotas and certificate files are written once — in the server
configuration (YAML and/or the runbook's environment names) — and this module turns them into nginx
directives, so the gateway can never disagree with the origin behind it. ``mirror.gateway`` only places the
gateway (ports, upstreams, cache, logs).

What is rendered, per host name of a domain (runbook §2, §5; DESIGN S6, S7):

* one ``server`` with that domain's certificate, chosen by SNI; names no domain claims get no certificate
  (``ssl_reject_handshake``), plain HTTP is redirected to HTTPS;
* per product served on the host, locations that forward ``Host`` and ``Authorization`` to that product's
  ``serve``: Basic Auth at the gateway where the domain requires authentication and has an htpasswd file
  (bearer tokens then pass through to the origin, which checks them); none on open or bearer-only domains;
* ``proxy_cache`` honouring the origin's ``Cache-Control`` (indexes 60 s, payloads 300 s) with
  ``proxy_cache_lock`` and ``X-Cache-Status``. The key is scheme, host, path (never the query string: the
  origin ignores it, so ``?bust=N`` is the same file and a cache hit) and the user nginx authenticated, so
  one domain's (or user's) answers never reach another's clients; a request carrying a
  credential nginx did not check itself (a bearer token; any credential on a domain without gateway Basic
  Auth) bypasses the cache, since only the origin can judge it;
* ``limit_req`` per domain and budget matching the origin's hourly quotas: a bucket of the hourly budget that
  refills at budget/hour (nginx counts at least one request a minute), keyed like the origin's quotas by user,
  else by address; cached answers count here too, which the origin never sees. Its refusals are the origin's
  429: ``application/problem+json`` (the same ``quota-exceeded`` body), ``Retry-After`` and ``RateLimit-*``;
* the client's address forwarded in ``X-Forwarded-For`` (the origin reads it from the peers in
  ``mirror.trustedProxies``, which must hold the gateway's address);
* on every answer a fresh ``X-Request-ID`` (the one forwarded to the origin), and ``RateLimit-*`` only when
  the origin counted this very request — a cached answer never repeats the counts of the request that filled
  the cache;
* a JSON access log with the cache status.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from stella_mirror.config import MirrorConfig, ProductMirror
from stella_mirror.errors import ConfigError
from stella_mirror.server.context import DomainPolicy, Product
from stella_mirror.server.middleware.quotas import exceeded_detail
from stella_mirror.server.problems import MEDIA_TYPE, problem_body
from stella_mirror.server.state import build_sites

CONFIG_NAME = "nginx.conf"
HEADER = (
    "# Written by `stella-mirror gateway render` from the mirror server's configuration: do not edit.\n"
    "# Change the configuration (domains, host names, authentication, quotas, certificates) and render again.\n"
)
PRODUCTS: tuple[Product, ...] = ("concelier", "excititor")

# Route classes by path, as the origin counts them (docs/auth-and-quotas.md): downloads against the download
# budget, everything else (indexes, manifests, signatures, metadata) against the index budget.
_DOWNLOADS = {
    "concelier": r"^/concelier/exports(/@[^/]+)?/mirror/[^/]+/bundle\.json$",
    "excititor": r"^/excititor/mirror(/@[^/]+)?/(domains/)?[^/]+/exports/[^/]+/download$",
}


@dataclass(frozen=True)
class Budget:
    """An hourly budget as an nginx ``limit_req_zone``."""

    zone: str
    per_hour: int
    name: str = "download"
    """``index`` or ``download``, as the origin names it in its 429."""

    @property
    def retry_after(self) -> int:
        """Seconds until the bucket holds a request again (nginx refills one every minute / rate)."""
        return math.ceil(60 / max(1, math.ceil(self.per_hour / 60)))

    @property
    def rate(self) -> str:
        return f"{max(1, math.ceil(self.per_hour / 60))}r/m"

    @property
    def burst(self) -> int:
        """Requests allowed at once besides the one being counted: the budget in total."""
        return self.per_hour - 1


@dataclass(frozen=True)
class Route:
    """One product's domain as served on one host."""

    product: Product
    domain_id: str
    key_path: str
    basic_file: Path | None
    """htpasswd checked by nginx (the domain requires authentication and has one), else None."""
    index: Budget | None
    download: Budget | None

    @property
    def realm_var(self) -> str:
        """The variable holding this domain's Basic Auth realm, ``off`` for bearer tokens."""
        return "mirror_realm_" + _zone(self.product, self.domain_id, "basic")


@dataclass
class Host:
    """One ``server`` block: a host name, its certificate and the products served on it."""

    name: str
    cert: Path
    key: Path
    routes: dict[Product, Route] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayPlan:
    """What the configuration asks the gateway to do."""

    hosts: list[Host]
    upstreams: dict[Product, str]
    token_auth: bool


def _zone(product: str, domain_id: str, budget: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{product}_{domain_id}_{budget}")


def _route(config: MirrorConfig, policy: DomainPolicy, key_path: str) -> Route:
    """The gateway's view of a domain, from the same resolved policy the origin applies."""
    required = config.authority.require_authentication or policy.require_authentication
    product, domain_id = policy.product, policy.domain_id
    index, download = policy.max_index_requests_per_hour, policy.max_download_requests_per_hour
    return Route(
        product=product,
        domain_id=domain_id,
        key_path=key_path,
        basic_file=policy.htpasswd if required else None,
        index=Budget(_zone(product, domain_id, "index"), index, "index") if index else None,
        download=Budget(_zone(product, domain_id, "download"), download, "download") if download else None,
    )


def plan(config: MirrorConfig) -> GatewayPlan:
    """The gateway's hosts from the configuration; :class:`ConfigError` naming the key when a domain cannot be
    put behind the gateway (no host name or certificate, two domains of one product on one host, two
    certificates for one host)."""
    hosts: dict[str, Host] = {}
    sites, _ = build_sites(config, "all")
    products = [p for p in PRODUCTS if sites[p].served]
    for product in products:
        for i, dom in enumerate(_mirror(config, product).domains):
            key_path, site_path = f"{product}.mirror.domains.{i}", config.site_key(product, i)
            if not dom.hostnames:
                raise ConfigError(f"{site_path}.hostnames", "the gateway serves a domain on its host names: set one")
            if dom.tls.cert_file is None or dom.tls.key_file is None:
                raise ConfigError(f"{site_path}.tls", "the gateway terminates TLS per domain: set certFile and keyFile")
            route = _route(config, sites[product].domains[dom.id], key_path)
            for name in dom.hostnames:
                host = hosts.setdefault(name, Host(name, dom.tls.cert_file, dom.tls.key_file))
                if (host.cert, host.key) != (dom.tls.cert_file, dom.tls.key_file):
                    raise ConfigError(f"{site_path}.tls", f"{name} already has another certificate")
                other = host.routes.get(product)
                if other is not None:
                    raise ConfigError(
                        f"{site_path}.hostnames", f"{name} already serves {product} domain {other.domain_id}"
                    )
                host.routes[product] = route
    if not hosts:
        raise ConfigError(
            "concelier.mirror.domains", "no domain to put behind the gateway (configure at least one with host names)"
        )
    gw = config.mirror.gateway
    upstreams: dict[Product, str] = {p: getattr(gw.upstreams, p) for p in products}
    return GatewayPlan(sorted(hosts.values(), key=lambda h: h.name), upstreams, _token_auth(config))


def _mirror(config: MirrorConfig, product: Product) -> ProductMirror:
    return config.concelier.mirror if product == "concelier" else config.excititor.mirror


def _token_auth(config: MirrorConfig) -> bool:
    auth = config.authority
    return bool(auth.issuer or auth.jwks_file or auth.jwks_url)


def _quote(value: str | Path) -> str:
    text = str(value)
    if re.search(r"[\s;{}\"'\\$]", text):
        raise ConfigError("", f"{text!r} cannot be written into nginx configuration (quotes, spaces, $ or braces)")
    return text


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append(("    " * self.depth + line) if line else "")

    def open(self, line: str) -> None:
        self(line + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self("}")


def render(config: MirrorConfig) -> str:
    """The complete ``nginx.conf`` for ``config`` (raises :class:`ConfigError` as :func:`plan` does)."""
    gp = plan(config)
    gw = config.mirror.gateway
    w = _Writer()
    if gw.user:
        w(f"user {_quote(gw.user)};")
    w("worker_processes auto;")
    w(f"pid {_quote(gw.pid_file)};")
    w(f"error_log {_quote(gw.error_log)} warn;")
    w()
    w.open("events")
    w("worker_connections 4096;")
    w.close()
    w()
    w.open("http")
    w("default_type application/octet-stream;")
    w("server_tokens off;")
    w("sendfile on;")
    w("keepalive_timeout 65s;")
    w()
    w("# One JSON line per request for the SIEM (runbook §5 step 5): cache status, user name (never a secret).")
    w("log_format mirror_json escape=json")
    w('    \'{"time":"$time_iso8601","requestId":"$request_id","client":"$remote_addr","host":"$host",\'')
    w('    \'"method":"$request_method","uri":"$request_uri","status":$status,"bytes":$body_bytes_sent,\'')
    w('    \'"user":"$remote_user","cache":"$upstream_cache_status","requestTime":$request_time,\'')
    w('    \'"upstreamTime":"$upstream_response_time","userAgent":"$http_user_agent"}\';')
    w(f"access_log {_quote(gw.access_log)} mirror_json;")
    w()
    w("# Runbook §5: the origin's Cache-Control decides how long (indexes 60 s, payloads 300 s).")
    w(
        f"proxy_cache_path {_quote(gw.cache_dir)} levels=1:2 keys_zone=mirror:20m max_size={gw.cache_max_size}"
        " inactive=30m use_temp_path=off;"
    )
    w("proxy_cache mirror;")
    w("proxy_cache_methods GET HEAD;")
    w("proxy_cache_lock on;")
    w("proxy_cache_lock_timeout 10s;")
    w("proxy_cache_revalidate on;")
    w("proxy_cache_use_stale error timeout updating http_502 http_503 http_504;")
    w("proxy_cache_background_update on;")
    w()
    for product, address in gp.upstreams.items():
        w.open(f"upstream mirror_{product}")
        w(f"server {address};")
        w("keepalive 32;")
        w.close()
    w()
    w("proxy_http_version 1.1;")
    w('proxy_set_header Connection "";')
    w("proxy_set_header Host $host;")
    w("# Basic Auth terminates here, but the credential goes on: the origin applies the same domain policy and")
    w("# counts quotas for the same principal (runbook §5 step 4).")
    w("proxy_set_header Authorization $http_authorization;")
    w("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    w("proxy_set_header X-Forwarded-Proto $scheme;")
    w("proxy_set_header X-Request-ID $request_id;")
    w("proxy_read_timeout 60s;")
    w()
    w("# Every answer gets this request's id (a cached one would repeat the id of the request that filled the")
    w("# cache), and RateLimit-* only when the origin counted this very request (never a cached answer's).")
    w("proxy_hide_header X-Request-ID;")
    for name in _RATELIMIT:
        w(f"proxy_hide_header {name};")
    for name in _RATELIMIT:
        var = name.lower().replace("-", "_")
        w(f'map "$upstream_cache_status:$upstream_http_{var}" $mirror_{var} {{')
        w('    "~^(MISS|BYPASS|EXPIRED)?:(?<value>.+)$" $value;')
        w('    default "";')
        w("}")
    w()
    w("# Quotas (runbook §5 step 5, §7): per user like the origin, else per address.")
    w("map $remote_user $mirror_client {")
    w('    "" $binary_remote_addr;')
    w("    default $remote_user;")
    w("}")
    if gp.token_auth:
        w("# Bearer tokens are checked by the origin: nginx's Basic Auth steps aside for them.")
        realms = sorted({(r.realm_var, r.domain_id) for h in gp.hosts for r in h.routes.values() if r.basic_file})
        for var, domain_id in realms:
            w(f"map $http_authorization ${var} {{")
            w('    "~*^bearer " off;')
            w(f'    default "{_quote(domain_id)}";')
            w("}")
        w("map $http_authorization $mirror_bearer {")
        w('    "~*^bearer " 1;')
        w('    default "";')
        w("}")
    w("# Refusals are answered like the origin's (a problem+json per budget, at the end of each server).")
    w("limit_req_status 429;")
    budgets = sorted(
        {b for h in gp.hosts for r in h.routes.values() for b in (r.index, r.download) if b is not None},
        key=lambda b: b.zone,
    )
    for budget in budgets:
        w(f"limit_req_zone $mirror_client zone={budget.zone}:10m rate={budget.rate};  # {budget.per_hour}/hour")
    w()
    w("ssl_protocols TLSv1.2 TLSv1.3;")
    w("ssl_prefer_server_ciphers off;")
    w("ssl_session_cache shared:mirror_tls:10m;")
    w("ssl_session_timeout 1h;")
    w()
    if gw.redirect_listen:
        w("# Plain HTTP: redirect to HTTPS.")
        w.open("server")
        w(f"listen {gw.redirect_listen} default_server;")
        w("server_name _;")
        port = "" if gw.listen == 443 else f":{gw.listen}"
        w(f"return 308 https://$host{port}$request_uri;")
        w.close()
        w()
    if not config.mirror.trusted_proxies:
        w("# WARNING: mirror.trustedProxies is empty: the origins will count every client behind this gateway as")
        w("# one (the gateway's address). Set it to this gateway's address (MIRROR__TRUSTEDPROXIES__0=...).")
    else:
        w(f"# The origins read X-Forwarded-For from mirror.trustedProxies: {' '.join(config.mirror.trusted_proxies)}")
    w("# TLS for names that no domain claims: refuse the handshake.")
    w.open("server")
    w(f"listen {gw.listen} ssl default_server;")
    w("server_name _;")
    w("ssl_reject_handshake on;")
    w.close()
    for host in gp.hosts:
        w()
        _server(w, host, gw.listen, gp.token_auth)
    if gw.health_listen:
        w()
        w("# Health listener for container checks only (do not publish): /<product>/readyz of each origin.")
        w.open("server")
        w(f"listen {gw.health_listen};")
        w("server_name _;")
        w("access_log off;")
        w("proxy_cache off;")
        for product in gp.upstreams:
            w(f"location = /{product}/readyz {{ proxy_pass http://mirror_{product}/readyz; }}")
        w("location / { return 404; }")
        w.close()
    w.close()
    return HEADER + "\n".join(w.lines) + "\n"


def _server(w: _Writer, host: Host, listen: int, token_auth: bool) -> None:
    domains = ", ".join(f"{p} {r.domain_id}" for p, r in host.routes.items())
    w(f"# ---- {host.name}: {domains}")
    w.open("server")
    w(f"listen {listen} ssl http2;")
    w(f"server_name {host.name};")
    w(f"ssl_certificate     {_quote(host.cert)};")
    w(f"ssl_certificate_key {_quote(host.key)};")
    _common_headers(w)
    for name in _RATELIMIT:
        w(f"add_header {name} $mirror_{name.lower().replace('-', '_')} always;")
    for product, route in host.routes.items():
        w()
        w(f"# {product} domain {route.domain_id} ({route.key_path})")
        w.open(f"location ~ {_DOWNLOADS[product]}")
        _proxy(w, route, route.download, token_auth)
        w.close()
        w.open(f"location /{product}/")
        _proxy(w, route, route.index, token_auth)
        w.close()
    # The status page answers per caller (it shows only what the caller may read): never cached.
    status_upstream = next(iter(host.routes))
    w()
    w("location ~ ^/(status(\\.json)?)?$ {  # and the landing page")
    w("    proxy_cache off;")
    w(f"    proxy_pass http://mirror_{status_upstream};")
    w("}")
    w("location / { return 404; }")
    budgets = sorted(
        {b for r in host.routes.values() for b in (r.index, r.download) if b is not None}, key=lambda b: b.zone
    )
    for budget in budgets:
        _refusal(w, budget)
    w.close()


_RATELIMIT = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")


def _common_headers(w: _Writer) -> None:
    w("add_header X-Cache-Status $upstream_cache_status always;")
    w('add_header Strict-Transport-Security "max-age=31536000" always;')
    w("add_header X-Request-ID $request_id always;")


def _refusal(w: _Writer, budget: Budget) -> None:
    """The named location answering ``limit_req``'s 429 for ``budget`` as the origin does (problem+json,
    ``Retry-After``, ``RateLimit-*``; add_header here replaces the server's, so they are repeated)."""
    body = problem_body(
        429, "quota-exceeded", "Too many requests", exceeded_detail(budget.name, budget.per_hour, 3600)
    ).decode()
    if "'" in body or "$" in body or "\\" in body:
        raise ConfigError("", f"cannot write the quota refusal of {budget.zone} into nginx configuration")
    w()
    w(f"# {budget.zone}: over quota, answered like the origin's 429.")
    w.open(f"location @{budget.zone}_refused")
    _common_headers(w)
    w("add_header Cache-Control no-store always;")
    w(f"add_header Retry-After {budget.retry_after} always;")
    w(f"add_header RateLimit-Limit {budget.per_hour} always;")
    w("add_header RateLimit-Remaining 0 always;")
    w(f"add_header RateLimit-Reset {budget.retry_after} always;")
    w(f'add_header RateLimit-Policy "{budget.per_hour};w=3600" always;')
    w(f"default_type {MEDIA_TYPE};")
    w(f"return 429 '{body}';")
    w.close()


def _proxy(w: _Writer, route: Route, budget: Budget | None, token_auth: bool) -> None:
    if route.basic_file is not None:
        realm = f"${route.realm_var}" if token_auth else f'"{_quote(route.domain_id)}"'
        w(f"auth_basic {realm};")
        w(f"auth_basic_user_file {_quote(route.basic_file)};")
        w('proxy_cache_key "$scheme://$host$uri $remote_user";')
        if token_auth:
            w("proxy_cache_bypass $mirror_bearer;")
            w("proxy_no_cache $mirror_bearer;")
    else:
        w('proxy_cache_key "$scheme://$host$uri";')
        w("proxy_cache_bypass $http_authorization;")
        w("proxy_no_cache $http_authorization;")
    if budget is not None:
        w(f"limit_req zone={budget.zone} burst={budget.burst} nodelay;")
        w(f"error_page 429 @{budget.zone}_refused;")
    w(f"proxy_pass http://mirror_{route.product};")


def write(config: MirrorConfig, out_dir: Path) -> Path:
    """Render into ``out_dir/nginx.conf`` (written whole, then renamed over the old one)."""
    text = render(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / CONFIG_NAME
    tmp = out_dir / f".{CONFIG_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
