"""The mirror server's configuration: one typed model, read from a YAML file and then the environment.

Names follow the runbook (S9): ``CONCELIER__MIRROR__EXPORTROOT``,
``CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR``, ``EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT``,
``AUTHORITY__ISSUER``, ``MIRROR__QUOTAS__BACKEND``… ``__`` nests, names are case-insensitive, a numeric
segment is a list index (``DOMAINS__0__ID``) and merges with the file's list item of that index, and the
environment beats the file. The YAML file uses the same keys in camelCase (any case is accepted).

Every key and its default is documented in ``docs/configuration.md``. An invalid configuration raises
:class:`~stella_mirror.errors.ConfigError` naming the dotted key path (e.g.
``concelier.mirror.domains.0.maxDownloadRequestsPerHour``) and the reason.

Secrets are read from files only: the Authority client secret from ``authority.clientSecretFile``
(default ``/run/secrets/concelier-authority-client``); a secret value in the environment is refused.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from stella_mirror.bundle.layout import LATEST, valid_export_id
from stella_mirror.errors import ConfigError
from stella_mirror.redaction import redact_data
from stella_mirror.sync.config import SyncConfig

SECTIONS = ("concelier", "excititor", "authority", "mirror", "sync")
"""Top-level sections; environment variables under other prefixes are not ours and are ignored."""
STRICT_ENV_SECTIONS = ("concelier", "excititor", "mirror")
"""Sections whose unknown environment variables are errors (a typo would otherwise leave a default in force).
``AUTHORITY__`` and ``SYNC__`` variables that match nothing are only reported: the Authority and other services
read their own keys from a shared environment."""
IGNORE_ENV = "STELLA_MIRROR_IGNORE_ENV"
"""The escape hatch: comma-separated variable names, or prefixes ending in ``__``, that belong to something else
(a newer release's keys, another service's) and are ignored instead of refused — e.g.
``STELLA_MIRROR_IGNORE_ENV=CONCELIER__STORAGE__,MIRROR__NEWSETTING``."""

DEFAULT_CLIENT_SECRET_FILE = Path("/run/secrets/concelier-authority-client")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_UPSTREAM = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):[0-9]{1,5}$")
RESERVED_DOMAIN_IDS = frozenset({"domains", LATEST})
"""``/excititor/mirror/domains`` is the domain list, ``latest`` is the export pointer."""

_SECRET_ENV_KEYS = {
    ("authority", "clientsecret"): "authority.clientSecretFile",
    ("excititor", "authority", "clientsecret"): "authority.clientSecretFile",
    ("concelier", "authority", "clientsecret"): "authority.clientSecretFile",
}


class _Model(BaseModel):
    """camelCase keys on the wire, snake_case in code, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _host_names(value: tuple[str, ...]) -> tuple[str, ...]:
    """Host names lower-cased without a trailing dot; ValueError naming the first invalid one."""
    out = []
    for host in value:
        h = host.strip().lower().rstrip(".")
        if not _HOSTNAME.match(h):
            raise ValueError(f"{host!r} is not a valid host name")
        out.append(h)
    return tuple(out)


class TlsFiles(_Model):
    """A PEM certificate chain and its private key."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _both(self) -> TlsFiles:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("certFile and keyFile must be given together")
        return self

    @property
    def configured(self) -> bool:
        return self.cert_file is not None


class DomainConfig(_Model):
    """One mirror domain of one product line."""

    id: str
    display_name: str = ""
    require_authentication: bool | None = None
    """None: inherit the product's ``requireAuthentication``."""
    max_index_requests_per_hour: int | None = Field(default=None, ge=0)
    """None: inherit the product's ``maxIndexRequestsPerHour``; 0: unlimited."""
    max_download_requests_per_hour: int = Field(default=0, ge=0)
    htpasswd: Path | None = None
    hostnames: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    tls: TlsFiles = TlsFiles()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"{value!r} is not a valid domain id ([A-Za-z0-9._-], at most 64 characters)")
        if value.lower() in RESERVED_DOMAIN_IDS:
            raise ValueError(f"{value!r} is reserved")
        return value

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _host_names(value)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not scope or any(c.isspace() for c in scope):
                raise ValueError(f"{scope!r} is not a valid scope")
        return value


class SiteDomain(_Model):
    """``mirror.domains.<n>``: a domain's site — host names, certificate and htpasswd file — written once for both
    product lines. A product domain with the same ``id`` takes them from here (and may not set them itself), so the
    gateway, TLS by SNI and Basic Auth can never disagree between Concelier and Excititor."""

    id: str
    hostnames: tuple[str, ...] = ()
    htpasswd: Path | None = None
    tls: TlsFiles = TlsFiles()

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _host_names(value)


SITE_KEYS = ("hostnames", "htpasswd", "tls")
"""The domain keys that live in ``mirror.domains`` when the domain has an entry there."""


class ProductMirror(_Model):
    """``concelier.mirror`` / ``excititor.mirror``."""

    enabled: bool = True
    export_root: Path | None = None
    active_export_id: str = LATEST
    require_authentication: bool = False
    max_index_requests_per_hour: int = Field(default=0, ge=0)
    htpasswd: Path | None = None
    """Credentials for product-wide routes (Concelier ``index.json``, Excititor ``domains``) requested on a
    host that no domain claims; a host claimed by a domain uses that domain's file."""
    domains: tuple[DomainConfig, ...] = ()

    @field_validator("active_export_id")
    @classmethod
    def _active(cls, value: str) -> str:
        if value != LATEST and not valid_export_id(value):
            raise ValueError(f"{value!r} is neither 'latest' nor a valid export id")
        return value

    @field_validator("domains")
    @classmethod
    def _unique(cls, value: tuple[DomainConfig, ...]) -> tuple[DomainConfig, ...]:
        seen: set[str] = set()
        for dom in value:
            if dom.id in seen:
                raise ValueError(f"domain id {dom.id!r} is configured twice")
            seen.add(dom.id)
        return value


class ConcelierConfig(_Model):
    mirror: ProductMirror = ProductMirror()


class FilesystemArtifacts(_Model):
    root: Path | None = None


class ExcititorArtifacts(_Model):
    filesystem: FilesystemArtifacts = FilesystemArtifacts()


class ExcititorConfig(_Model):
    artifacts: ExcititorArtifacts = ExcititorArtifacts()
    mirror: ProductMirror = ProductMirror()

    @property
    def export_root(self) -> Path | None:
        """``excititor.mirror.exportRoot`` when set, else ``excititor.artifacts.filesystem.root``."""
        return self.mirror.export_root or self.artifacts.filesystem.root


class AuthorityConfig(_Model):
    issuer: str | None = None
    audiences: tuple[str, ...] = ()
    jwks_file: Path | None = None
    jwks_url: str | None = None
    client_secret_file: Path = DEFAULT_CLIENT_SECRET_FILE
    leeway_seconds: int = Field(default=30, ge=0, le=3600)
    require_authentication: bool = False
    """Global switch: every domain requires authentication when true."""
    basic_cache_ttl_seconds: float = Field(default=60.0, ge=0, le=3600)

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    def client_secret(self) -> str | None:
        """The client secret read from its file (never logged, never printed); None when absent."""
        try:
            return self.client_secret_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None


class QuotaConfig(_Model):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    fail_mode: Literal["open", "closed"] = "open"
    window_seconds: int = Field(default=3600, ge=1, le=86400)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """A URL redis-py can use, checked now by redis-py itself (it would fail at the first request);
        the reason never quotes the URL, which may hold a password."""
        if value is None:
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        from redis.asyncio import BlockingConnectionPool  # as the quota backend builds it; connects to nothing

        try:
            BlockingConnectionPool.from_url(value)
        except ValueError as exc:
            # redis-py's message can quote a part of the URL: only its first words are kept.
            reason = re.split(r"[:'\"]", str(exc), maxsplit=1)[0].strip() or "malformed"
            raise ValueError(f"not a valid Redis URL ({reason})") from None
        return value

    @model_validator(mode="after")
    def _redis(self) -> QuotaConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("redisUrl is required when backend is 'redis'")
        return self


class GatewayUpstreams(_Model):
    """Where the gateway reaches each product's ``serve`` (``host:port``)."""

    concelier: str = "127.0.0.1:8080"
    excititor: str = "127.0.0.1:8080"

    @field_validator("concelier", "excititor")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _UPSTREAM.match(value):
            raise ValueError(f"{value!r} is not a host:port address")
        return value


class GatewayConfig(_Model):
    """``mirror.gateway``: the nginx in front of ``serve``, written by ``stella-mirror gateway render``.

    Domains, host names, authentication, quotas and certificate files are the domains' own settings; these
    keys only place the gateway (ports, upstreams, cache, logs)."""

    terminate_tls: bool = False
    """True: the gateway terminates TLS with the domains' certificates; ``serve`` speaks plain HTTP behind it
    and does not load them."""
    listen: int = Field(default=443, ge=1, le=65535)
    redirect_listen: int = Field(default=80, ge=0, le=65535)
    """Plain-HTTP port redirecting to HTTPS (0: none)."""
    health_listen: int = Field(default=8081, ge=0, le=65535)
    """Plain-HTTP port answering ``/<product>/readyz`` for container health checks (0: none)."""
    upstreams: GatewayUpstreams = GatewayUpstreams()
    cache_dir: Path = Path("/var/cache/nginx/mirror")
    cache_max_size: str = "10g"
    access_log: str = "/dev/stdout"
    error_log: str = "/dev/stderr"
    pid_file: Path = Path("/var/run/nginx.pid")
    user: str | None = None
    """The ``user`` directive for nginx's workers (None: nginx's default)."""

    @field_validator("cache_max_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not re.match(r"^[0-9]+[kmgKMG]?$", value):
            raise ValueError(f"{value!r} is not an nginx size such as 10g or 512m")
        return value


class CacheConfig(_Model):
    """``mirror.cache``: the ``Cache-Control`` max-ages the server sends (runbook §5's recommended TTLs by default);
    the gateway's cache and a CDN honour them."""

    index_max_age_seconds: int = Field(default=60, ge=0, le=86400)
    """Indexes (``index.json``, Excititor ``index``, the domain list): they change on every publish."""
    payload_max_age_seconds: int = Field(default=300, ge=0, le=31536000)
    """Manifests, bundles, signatures, artifacts (also ``immutable``: they never change under their URL)."""


class LimitsConfig(_Model):
    """``mirror.limits``: what one client may cost the server (docs/auth-and-quotas.md, "Limits")."""

    max_header_bytes: int = Field(default=65536, ge=8192, le=1048576)
    """Request line plus header block; larger ones are answered ``431``. Also each connection's write buffer."""
    max_connections: int = Field(default=1024, ge=16, le=1_000_000)
    """Requests in flight per worker (more wait for a slot); with the workers and a headroom it sets the number
    of file descriptors ``serve`` makes sure it may open (RLIMIT_NOFILE, systemd ``LimitNOFILE``)."""
    status_requests_per_minute: int = Field(default=30, ge=1, le=100000)
    """``/status`` and ``/status.json`` per client address and worker; more are answered ``429``."""
    metrics_token_file: Path | None = None
    """When set, ``/metrics`` asks for ``Authorization: Bearer <the file's content>``."""


class MirrorServer(_Model):
    """``mirror``: the process-wide settings."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    service: Literal["all", "concelier", "excititor"] = "all"
    access_log: str = "-"
    """A file path, ``-`` for stdout, or ``off``."""
    metrics: bool = True
    pid_file: Path | None = None
    sendfile: bool = False
    """Send large file bodies with ``os.sendfile`` (plain HTTP only); see docs/benchmarks.md for why off."""
    keep_alive_seconds: float = Field(default=30.0, gt=0, le=60)
    """How long a connection may wait for a request's first byte and headers — a new connection, and an idle
    keep-alive one between requests (keep it above a load balancer's idle timeout, if any)."""
    docs_url: str | None = None
    """Where the landing page (``/``) points for documentation (e.g. the operators' runbook); unset: no link."""
    trusted_proxies: tuple[str, ...] = ()
    """Networks (CIDRs, or single addresses) of the proxies in front of the server — the gateway. Only for a
    request from one of them is ``X-Forwarded-For`` read: the client is its rightmost address outside these
    networks (the quotas of anonymous callers and the access log use it). Empty: the peer address, always."""
    quotas: QuotaConfig = QuotaConfig()
    cache: CacheConfig = CacheConfig()
    limits: LimitsConfig = LimitsConfig()
    tls: TlsFiles = TlsFiles()
    gateway: GatewayConfig = GatewayConfig()
    domains: tuple[SiteDomain, ...] = ()
    """The domains' sites (host names, certificate, htpasswd), shared by both product lines; ids are unique
    (checked with the product domains, :meth:`MirrorConfig._sites`)."""

    @field_validator("docs_url")
    @classmethod
    def _docs_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s<>\"']+$", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not a network (CIDR such as 10.0.0.0/8) or an address") from None
        return tuple(out)


class MirrorConfig(_Model):
    """The whole configuration."""

    concelier: ConcelierConfig = ConcelierConfig()
    excititor: ExcititorConfig = ExcititorConfig()
    authority: AuthorityConfig = AuthorityConfig()
    mirror: MirrorServer = MirrorServer()
    sync: SyncConfig = SyncConfig()
    """``stella-mirror sync`` jobs (model and docs in ``sync/config.py``)."""

    @model_validator(mode="before")
    @classmethod
    def _sites(cls, data: Any) -> Any:
        """Give each product domain the host names, certificate and htpasswd file of its ``mirror.domains`` entry.

        Written in both places is an error naming the product key (one home for the facts the gateway and TLS
        use); so is an entry that no product domain uses, and — once ``mirror.domains`` is used — a product domain
        without an entry there (a typo in either id would otherwise go unnoticed)."""
        sites = ((data.get("mirror") or {}) if isinstance(data, dict) else {}).get("domains")
        if not isinstance(sites, (list, tuple)) or not sites:
            return data
        by_id: dict[str, tuple[int, dict[str, Any]]] = {}
        for j, site in enumerate(sites):
            try:
                SiteDomain.model_validate(site)
            except ValidationError as exc:
                err = validation_error(exc)
                raise ConfigError(f"mirror.domains.{j}.{err.key_path}".rstrip("."), err.reason) from None
            if site["id"] in by_id:
                raise ConfigError(f"mirror.domains.{j}.id", f"domain id {site['id']!r} is configured twice")
            by_id[site["id"]] = (j, site)
        data = copy.deepcopy(data)
        used: set[int] = set()
        for product in ("concelier", "excititor"):
            doms = ((data.get(product) or {}).get("mirror") or {}).get("domains") or []
            for i, dom in enumerate(doms):
                if not isinstance(dom, dict) or "id" not in dom:
                    continue  # reported as a missing id by the model
                hit = by_id.get(str(dom.get("id")))
                if hit is None:
                    known = ", ".join(sorted(by_id))
                    raise ConfigError(
                        f"{product}.mirror.domains.{i}.id",
                        f"domain {dom.get('id')!r} has no entry in mirror.domains ({known}): fix the id or add its "
                        "site there",
                    )
                j, site = hit
                used.add(j)
                for key in SITE_KEYS:
                    if key in dom:
                        raise ConfigError(
                            f"{product}.mirror.domains.{i}.{key}",
                            f"domain {dom['id']!r} has its site in mirror.domains.{j}: write {key} there only",
                        )
                    if key in site:
                        dom[key] = site[key]
        for j, site in enumerate(sites):
            if j not in used:
                raise ConfigError(f"mirror.domains.{j}.id", f"no concelier or excititor domain is {site['id']!r}")
        return data

    def site_key(self, product: str, index: int) -> str:
        """Where a product domain's host names, certificate and htpasswd are written: ``mirror.domains.<j>`` when
        it has a site entry, else ``<product>.mirror.domains.<index>`` (for error messages)."""
        mirror = self.concelier.mirror if product == "concelier" else self.excititor.mirror
        domain_id = mirror.domains[index].id
        for j, site in enumerate(self.mirror.domains):
            if site.id == domain_id:
                return f"mirror.domains.{j}"
        return f"{product}.mirror.domains.{index}"

    def tls_enabled(self) -> bool:
        """Whether the server terminates TLS (a default certificate or any per-domain one), which it does not
        when the gateway in front terminates it (``mirror.gateway.terminateTls``)."""
        if self.mirror.gateway.terminate_tls:
            return False
        doms = [*self.concelier.mirror.domains, *self.excititor.mirror.domains]
        return self.mirror.tls.configured or any(d.tls.configured for d in doms)

    @model_validator(mode="after")
    def _tls(self) -> MirrorConfig:
        doms = [*self.concelier.mirror.domains, *self.excititor.mirror.domains]
        if self.mirror.gateway.terminate_tls:
            return self
        if any(d.tls.configured for d in doms) and not self.mirror.tls.configured:
            raise ValueError("per-domain TLS certificates need a default mirror.tls certificate for other names")
        return self


# --- environment → nested dict ----------------------------------------------------------------------


@dataclass
class LoadReport:
    """What loading noticed besides errors: environment keys that matched nothing (likely typos)."""

    ignored_env: list[str] = field(default_factory=list)
    """Dotted key paths (lower case, as written) of the environment keys that matched nothing."""
    hints: dict[str, str] = field(default_factory=dict)
    """Dotted key path -> the setting it most likely meant (a near spelling), for the error message."""


def env_to_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``A__B__0__C=value`` variables of our sections into ``{"a": {"b": {0: {"c": "value"}}}}``.

    Keys are lower-cased (names are case-insensitive); numeric segments become ``int`` keys (list indexes);
    empty values are treated as unset. Variables of other prefixes are not ours and are skipped.
    """
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        parts = name.split("__")
        if len(parts) < 2 or parts[0].lower() not in SECTIONS or value == "":
            continue
        if any(p == "" for p in parts):
            raise ConfigError(name, "empty segment in environment variable name")
        keys: list[str | int] = [int(p) if p.isdigit() else p.lower() for p in parts]
        node: dict[Any, Any] = tree
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(_dotted(keys[: i + 1]), f"set both as a value and as a section (by {name})")
            node = child
        if isinstance(node.get(keys[-1]), dict):
            raise ConfigError(_dotted(keys), f"set both as a value and as a section (by {name})")
        node[keys[-1]] = value
    return tree


def _dotted(keys: list[Any] | tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in keys)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _sequence_item(annotation: Any) -> Any | None:
    """The item type of ``tuple[X, ...]`` / ``list[X]``, else None."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def canonicalize(data: Any, model: type[BaseModel], path: tuple[Any, ...], strict: bool, report: LoadReport) -> Any:
    """Rename keys of ``data`` to the model's camelCase aliases, matching case-insensitively.

    Numeric-keyed dicts (from the environment) under list fields stay dicts here (merged by index later).
    Unknown keys raise :class:`ConfigError` when ``strict`` (a file), else are reported and dropped
    (the environment carries other services' variables too).
    """
    if not isinstance(data, dict):
        return data
    fields = {
        (info.alias or name).lower(): (info.alias or name, info.annotation) for name, info in model.model_fields.items()
    }
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(_dotted((*path, key)), "expected a key name, not a list index")
        match = fields.get(key.lower()) or fields.get(key.replace("_", "").lower())
        if match is None:
            near = difflib.get_close_matches(key.replace("_", "").lower(), list(fields), n=1, cutoff=0.8)
            hint = fields[near[0]][0] if near else None
            if strict:
                raise ConfigError(_dotted((*path, key)), "unknown key" + (f" (did you mean {hint}?)" if hint else ""))
            report.ignored_env.append(_dotted((*path, key)))
            if hint:
                report.hints[_dotted((*path, key))] = _dotted((*path, hint))
            continue
        alias, annotation = match
        out[alias] = _canonical_value(value, _unwrap(annotation), (*path, alias), strict, report)
    return out


def _canonical_value(value: Any, annotation: Any, path: tuple[Any, ...], strict: bool, report: LoadReport) -> Any:
    if _is_model(annotation):
        return canonicalize(value, annotation, path, strict, report)
    item = _sequence_item(annotation)
    if item is not None:
        item = _unwrap(item)
        if isinstance(value, list):
            return [_canonical_value(v, item, (*path, i), strict, report) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if any(not isinstance(k, int) for k in value):
                raise ConfigError(_dotted(path), "expected a list (numeric indexes such as __0__)")
            return {k: _canonical_value(v, item, (*path, k), strict, report) for k, v in value.items()}
    return value


def merge(base: Any, override: Any, path: tuple[Any, ...] = ()) -> Any:
    """Deep-merge ``override`` (environment) over ``base`` (file).

    Dicts merge key by key; an index-keyed dict merges into a list item by item (an index may extend the
    list by one at a time: a gap is an error naming the missing index); anything else is replaced.
    """
    if isinstance(override, dict) and override and all(isinstance(k, int) for k in override):
        items = list(base) if isinstance(base, list) else []
        for index in sorted(override):
            if index < len(items):
                items[index] = merge(items[index], override[index], (*path, index))
            elif index == len(items):
                items.append(merge(None, override[index], (*path, index)))
            else:
                raise ConfigError(_dotted((*path, index)), f"list index {index} given but item {len(items)} is missing")
        return items
    if isinstance(override, dict):
        out = dict(base) if isinstance(base, dict) else {}
        for key, value in override.items():
            out[key] = merge(out.get(key), value, (*path, key))
        return out
    return override


def _refuse_secrets(env_tree: dict[str, Any]) -> None:
    for keys, use in _SECRET_ENV_KEYS.items():
        node: Any = env_tree
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            raise ConfigError(
                _dotted(keys), f"secrets are never read from the environment in clear; put it in a file and set {use}"
            )


def env_names(environ: Mapping[str, str], dotted: str) -> list[str]:
    """The environment variables that set the key path ``dotted`` (as :class:`LoadReport` records it) or keys
    under it, sorted."""
    want = dotted.lower().split(".")
    return sorted(n for n in environ if [p.lower() for p in n.split("__")][: len(want)] == want)


def _refuse_unknown_env(environ: Mapping[str, str], report: LoadReport) -> None:
    """An environment variable under ``CONCELIER__``, ``EXCITITOR__`` or ``MIRROR__`` that matches no setting is a
    :class:`ConfigError` naming the variable (exit 3), unless :data:`IGNORE_ENV` lists it."""
    allowed = [a.strip().upper() for a in environ.get(IGNORE_ENV, "").split(",") if a.strip()]

    def allowed_name(name: str) -> bool:
        up = name.upper()
        return any(up == a or (a.endswith("__") and up.startswith(a)) for a in allowed)

    for dotted in report.ignored_env:
        if dotted.split(".", 1)[0] not in STRICT_ENV_SECTIONS:
            continue
        names = [n for n in env_names(environ, dotted) if not allowed_name(n)]
        if not names:
            continue
        hint = report.hints.get(dotted)
        meant = f"; did you mean {hint.replace('.', '__').upper()}?" if hint else ""
        raise ConfigError(
            names[0],
            f"matches no setting ({dotted}){meant} — fix the name, or list it in {IGNORE_ENV} if it belongs to "
            "something else",
        )


def read_yaml(path: Path) -> dict[str, Any]:
    """The YAML file as a mapping (an empty file is an empty mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read configuration file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(str(path), f"not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the configuration file must be a mapping at the top level")
    return data


def validation_error(exc: ValidationError) -> ConfigError:
    """pydantic's first error as a :class:`ConfigError` naming the key path (camelCase, as written)."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required"
    return ConfigError(".".join(loc), msg)


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    report: LoadReport | None = None,
) -> MirrorConfig:
    """Read the YAML file (optional), then the environment over it, and validate."""
    import os

    report = report if report is not None else LoadReport()
    env = os.environ if environ is None else environ
    file_data = canonicalize(read_yaml(path), MirrorConfig, (), True, report) if path is not None else {}
    env_tree = env_to_tree(env)
    _refuse_secrets(env_tree)
    env_data = canonicalize(env_tree, MirrorConfig, (), False, report)
    _refuse_unknown_env(env, report)
    merged = merge(file_data, env_data)
    try:
        return MirrorConfig.model_validate(merged)
    except ValidationError as exc:
        raise validation_error(exc) from None


def redacted(config: MirrorConfig) -> dict[str, Any]:
    """The effective configuration as plain data, safe to print: no secret values.

    The client secret is never loaded here — only whether its file is present; every URL (the Redis URL, the
    JWKS URL…) has its user-info and secret query parameters replaced by ``***`` (:mod:`stella_mirror.redaction`).
    """
    data: dict[str, Any] = redact_data(config.model_dump(mode="json", by_alias=True))
    data["authority"]["clientSecretPresent"] = config.authority.client_secret_file.is_file()
    return data
