"""The server's immutable state, built from a :class:`~stella_mirror.config.MirrorConfig`.

Everything a request reads — domain policies, export resolvers, the authenticator, the quota backend — hangs
off one :class:`ServerState`. A reload builds a complete new state first (reading htpasswd files, JWKS and
certificates) and then swaps one attribute of :class:`StateHolder`; requests already running keep the state
they started with, new ones see the new one, and a reload that fails leaves the old state in force.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stella_mirror.config import MirrorConfig, ProductMirror
from stella_mirror.server.context import DomainPolicy, Product
from stella_mirror.server.exports import ExportResolver

if TYPE_CHECKING:
    from stella_mirror.server.authn.authenticator import Authenticator
    from stella_mirror.server.quotas.backend import QuotaBackend

log = logging.getLogger("stella_mirror.server")

NOT_CONFIGURED = "Mirror export root is not configured"
"""The exact log line (runbook §7) and readiness reason when an enabled product has no export root."""

WIDE_DOMAIN_ID = "_all"
"""The policy id for product-wide routes (Concelier index, Excititor domain list) on a host no domain
claims; it cannot collide with a configured id (those start with a letter or digit)."""

Service = Literal["all", "concelier", "excititor"]


@dataclass(frozen=True)
class ProductSite:
    """One product line as served: its export root, domains and host-name map."""

    product: Product
    served: bool
    """Enabled in the configuration and selected by ``--service``."""
    root: Path | None
    resolver: ExportResolver | None
    domains: dict[str, DomainPolicy]
    wide: DomainPolicy
    by_host: dict[str, DomainPolicy]
    """Host name → the first domain that claims it (for product-wide routes)."""

    def domain(self, domain_id: str) -> DomainPolicy | None:
        return self.domains.get(domain_id)

    def wide_policy(self, host: str) -> DomainPolicy:
        """The policy for a product-wide route requested on ``host``."""
        return self.by_host.get(host, self.wide) if self.by_host else self.wide


def _policies(product: Product, mirror: ProductMirror) -> tuple[dict[str, DomainPolicy], DomainPolicy]:
    domains: dict[str, DomainPolicy] = {}
    for dom in mirror.domains:
        domains[dom.id] = DomainPolicy(
            product=product,
            domain_id=dom.id,
            display_name=dom.display_name or dom.id,
            require_authentication=(
                mirror.require_authentication if dom.require_authentication is None else dom.require_authentication
            ),
            htpasswd=dom.htpasswd,
            accepted_scopes=dom.scopes,
            max_index_requests_per_hour=(
                mirror.max_index_requests_per_hour
                if dom.max_index_requests_per_hour is None
                else dom.max_index_requests_per_hour
            ),
            max_download_requests_per_hour=dom.max_download_requests_per_hour,
            hostnames=dom.hostnames,
        )
    wide = DomainPolicy(
        product=product,
        domain_id=WIDE_DOMAIN_ID,
        display_name=f"{product.title()} mirror",
        require_authentication=mirror.require_authentication,
        htpasswd=mirror.htpasswd,
        max_index_requests_per_hour=mirror.max_index_requests_per_hour,
    )
    return domains, wide


def build_site(product: Product, mirror: ProductMirror, root: Path | None, service: Service) -> ProductSite:
    """The served view of one product line."""
    domains, wide = _policies(product, mirror)
    by_host: dict[str, DomainPolicy] = {}
    for policy in domains.values():
        for host in policy.hostnames:
            by_host.setdefault(host, policy)
    served = mirror.enabled and service in ("all", product)
    resolver = ExportResolver(root, mirror.active_export_id) if (served and root is not None) else None
    return ProductSite(product, served, root, resolver, domains, wide, by_host)


@dataclass(frozen=True)
class ServerState:
    """One consistent generation of configuration-derived state."""

    config: MirrorConfig
    sites: dict[Product, ProductSite]
    authenticator: Authenticator | None = None
    """None only when the authentication module is not installed."""
    quota_backend: QuotaBackend | None = None
    generation: int = 0
    problems: list[str] = field(default_factory=list)
    """Configuration problems found while building (also logged), e.g. a missing export root."""
    metrics_token: bytes | None = None
    """What ``/metrics`` asks for as a bearer token (``mirror.limits.metricsTokenFile``), None: open."""
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """``mirror.trustedProxies``: peers whose ``X-Forwarded-For`` names the client (:func:`client_address`)."""
    restricted: frozenset[Product] = frozenset()
    """Products whose callers may see different domains (:func:`stella_mirror.server.visibility.restricted`)."""
    visibility: dict[tuple[str, str, bytes | None], tuple[float, frozenset[str]]] = field(default_factory=dict)
    """Readable domains recently decided for a caller (:mod:`stella_mirror.server.visibility`), this generation's."""

    def site(self, product: Product) -> ProductSite:
        return self.sites[product]

    def all_policies(self) -> list[DomainPolicy]:
        out: list[DomainPolicy] = []
        for site in self.sites.values():
            if site.served:
                out += [site.wide, *site.domains.values()]
        return out


def client_address(peer: str, forwarded: str | None, trusted: ServerState | None) -> str:
    """The client of a request: the peer address, or — when the peer is a trusted proxy and sent
    ``X-Forwarded-For`` — the rightmost address of that list outside the trusted networks (each trusted proxy
    appends the address it saw, so everything left of the first untrusted hop could be forged by the client).
    A hop that is not an IP address ends the walk at the last trusted address seen."""
    networks = trusted.trusted_proxies if trusted is not None else ()
    if not networks or not forwarded or not _trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed(forwarded.split(",")):
        hop = hop.strip()
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return client
        client = hop
    return client


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def build_sites(config: MirrorConfig, service: Service | None = None) -> tuple[dict[Product, ProductSite], list[str]]:
    """Both product sites and the problems to report (logged by the caller)."""
    svc: Service = service or config.mirror.service
    sites: dict[Product, ProductSite] = {
        "concelier": build_site("concelier", config.concelier.mirror, config.concelier.mirror.export_root, svc),
        "excititor": build_site("excititor", config.excititor.mirror, config.excititor.export_root, svc),
    }
    problems = []
    for site in sites.values():
        if site.served and site.root is None:
            problems.append(f"{site.product}: {NOT_CONFIGURED}")
        elif site.served and site.root is not None and not site.root.is_dir():
            problems.append(f"{site.product}: {NOT_CONFIGURED}")
            problems.append(f"{site.product}: the configured export root {site.root} does not exist")
    return sites, problems


class StateHolder:
    """Holds the current :class:`ServerState`; ``current`` is replaced atomically on reload."""

    def __init__(self, state: ServerState) -> None:
        self.current = state
