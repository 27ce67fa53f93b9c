"""The Excititor export configuration (YAML): providers, mirror domains and their exports.

Example::

    providers:
      - {id: vendor-a, kind: vendor, weight: 1.0, paths: ["vex/vendor-a/**/*.json"]}
      - {id: hub, kind: hub, weight: 0.5, paths: ["vex/hub/**"]}
    domains:
      - id: community
        displayName: Community
        exports:
          - {key: consensus, format: json, view: consensus}
          - {key: claims, format: jsonl, view: claims, filters: {providers: [hub]}}
          - {key: openvex, format: openvex, view: consensus, filters: {productTypes: [pypi, golang]}}

Provider ``paths`` are globs (``**`` recursive) relative to the configuration file's folder. Filters:
``vulnerabilities`` (ids; a trailing ``*`` makes a prefix, e.g. ``CVE-2024-*``), ``productTypes``
(purl types), ``productNamespaces`` (purl namespaces, ``wolfi`` or ``apk/wolfi``) and ``providers``
(provider ids; for a consensus view the consensus is computed from those providers only).

Every mistake is a :class:`~stella_mirror.errors.ConfigError` naming the key path
(``domains.0.exports.1.format``) and the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stella_mirror.errors import ConfigError
from stella_mirror.excititor.claims import purl_namespace, purl_type

PROVIDER_KINDS = ("vendor", "distro", "platform", "hub", "attestation")
FORMATS = ("json", "jsonl", "openvex")
VIEWS = ("consensus", "claims")
EXTENSIONS = {"json": "json", "jsonl": "jsonl", "openvex": "openvex.json"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Provider:
    """A VEX provider: who it is, how much its word weighs, which documents are its."""

    id: str
    kind: str
    weight: float
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Filters:
    """Which records an export carries (empty tuple = no restriction)."""

    vulnerabilities: tuple[str, ...] = ()
    product_types: tuple[str, ...] = ()
    product_namespaces: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    def vulnerability_matches(self, ids: tuple[str, ...] | list[str]) -> bool:
        """True when any of ``ids`` (a key and its aliases) is listed, or no vulnerability filter is set."""
        if not self.vulnerabilities:
            return True
        for pattern in self.vulnerabilities:
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                if any(i.startswith(prefix) for i in ids):
                    return True
            elif pattern in ids:
                return True
        return False

    def product_matches(self, product_key: str) -> bool:
        """True when the product's purl type and namespace pass the filters (non-purls fail any product filter)."""
        if not self.product_types and not self.product_namespaces:
            return True
        ptype = purl_type(product_key)
        if ptype is None:
            return False
        if self.product_types and ptype not in self.product_types:
            return False
        if self.product_namespaces:
            ns = purl_namespace(product_key) or ""
            return ns in self.product_namespaces or f"{ptype}/{ns}" in self.product_namespaces
        return True

    def as_dict(self) -> dict[str, list[str]]:
        """The filters as written in configuration (only the ones set)."""
        out = {
            "vulnerabilities": list(self.vulnerabilities),
            "productTypes": list(self.product_types),
            "productNamespaces": list(self.product_namespaces),
            "providers": list(self.providers),
        }
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class ExportSpec:
    """One artifact of a domain."""

    key: str
    format: str
    view: str
    filters: Filters = field(default_factory=Filters)

    @property
    def filename(self) -> str:
        return f"{self.key}.{EXTENSIONS[self.format]}"


@dataclass(frozen=True)
class Domain:
    """A mirror domain and its exports."""

    id: str
    display_name: str
    exports: tuple[ExportSpec, ...]


@dataclass(frozen=True)
class ExcititorConfig:
    """A validated configuration; ``base_dir`` anchors provider globs."""

    providers: tuple[Provider, ...]
    domains: tuple[Domain, ...]
    base_dir: Path
    source: str = "<config>"

    def provider(self, provider_id: str) -> Provider:
        for p in self.providers:
            if p.id == provider_id:
                return p
        raise KeyError(provider_id)


def load_config(path: Path) -> ExcititorConfig:
    """Read and validate a YAML configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read configuration: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from exc
    return parse_config(data, path.resolve().parent, str(path))


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}" if key else self.source, reason)

    def obj(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, "must be a mapping")
        return value

    def seq(self, value: Any, key: str, required: bool = True) -> list[Any]:
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise self.error(key, "must be a list")
        return value

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise self.error(key, "must be a name of letters, digits, '.', '_' or '-' (at most 64)")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        items = self.seq(value, key, required=False)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{key}.{i}", "must be a non-empty string")
        return tuple(s.strip() for s in items)

    def unknown(self, mapping: dict[str, Any], allowed: set[str], key: str) -> None:
        extra = sorted(set(mapping) - allowed)
        if extra:
            prefix = f"{key}." if key else ""
            raise self.error(f"{prefix}{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def parse_config(data: Any, base_dir: Path, source: str = "<config>") -> ExcititorConfig:
    """Validate a parsed configuration mapping."""
    ctx = _Ctx(source)
    root = ctx.obj(data, "")
    ctx.unknown(root, {"providers", "domains"}, "")
    providers: list[Provider] = []
    for i, raw in enumerate(ctx.seq(root.get("providers"), "providers")):
        key = f"providers.{i}"
        p = ctx.obj(raw, key)
        ctx.unknown(p, {"id", "kind", "weight", "paths"}, key)
        pid = ctx.name(p.get("id"), key + ".id")
        if any(x.id == pid for x in providers):
            raise ctx.error(key + ".id", f"provider {pid!r} is defined twice")
        kind = p.get("kind")
        if kind not in PROVIDER_KINDS:
            raise ctx.error(key + ".kind", f"must be one of {', '.join(PROVIDER_KINDS)}")
        weight = p.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ctx.error(key + ".weight", "must be a number")
        if not 0 <= weight <= 1000:
            raise ctx.error(key + ".weight", "must be between 0 and 1000")
        paths = ctx.strings(p.get("paths"), key + ".paths")
        if not paths:
            raise ctx.error(key + ".paths", "must list at least one path or glob")
        providers.append(Provider(pid, kind, float(weight), paths))
    if not providers:
        raise ctx.error("providers", "at least one provider is required")
    known = {p.id for p in providers}
    domains: list[Domain] = []
    for i, raw in enumerate(ctx.seq(root.get("domains"), "domains")):
        key = f"domains.{i}"
        d = ctx.obj(raw, key)
        ctx.unknown(d, {"id", "displayName", "exports"}, key)
        did = ctx.name(d.get("id"), key + ".id")
        if any(x.id == did for x in domains):
            raise ctx.error(key + ".id", f"domain {did!r} is defined twice")
        display = d.get("displayName", did)
        if not isinstance(display, str) or not display.strip():
            raise ctx.error(key + ".displayName", "must be a non-empty string")
        exports: list[ExportSpec] = []
        for j, raw_e in enumerate(ctx.seq(d.get("exports"), key + ".exports")):
            ekey = f"{key}.exports.{j}"
            e = ctx.obj(raw_e, ekey)
            ctx.unknown(e, {"key", "format", "view", "filters"}, ekey)
            export_key = ctx.name(e.get("key"), ekey + ".key")
            if any(x.key == export_key for x in exports):
                raise ctx.error(ekey + ".key", f"export key {export_key!r} is used twice in domain {did!r}")
            fmt = e.get("format")
            if fmt not in FORMATS:
                raise ctx.error(ekey + ".format", f"must be one of {', '.join(FORMATS)}")
            view = e.get("view", "claims" if fmt == "jsonl" else "consensus")
            if view not in VIEWS:
                raise ctx.error(ekey + ".view", f"must be one of {', '.join(VIEWS)}")
            if fmt == "openvex" and view != "consensus":
                raise ctx.error(ekey + ".view", "the openvex format carries the consensus view only")
            filters = _filters(ctx, e.get("filters"), ekey + ".filters", known)
            exports.append(ExportSpec(export_key, fmt, view, filters))
        if not exports:
            raise ctx.error(key + ".exports", "at least one export is required")
        domains.append(Domain(did, display.strip(), tuple(exports)))
    if not domains:
        raise ctx.error("domains", "at least one domain is required")
    return ExcititorConfig(tuple(providers), tuple(domains), base_dir, source)


def _filters(ctx: _Ctx, value: Any, key: str, known: set[str]) -> Filters:
    if value is None:
        return Filters()
    f = ctx.obj(value, key)
    ctx.unknown(f, {"vulnerabilities", "productTypes", "productNamespaces", "providers"}, key)
    providers = ctx.strings(f.get("providers"), key + ".providers")
    for i, pid in enumerate(providers):
        if pid not in known:
            raise ctx.error(f"{key}.providers.{i}", f"unknown provider {pid!r}")
    return Filters(
        vulnerabilities=ctx.strings(f.get("vulnerabilities"), key + ".vulnerabilities"),
        product_types=tuple(t.lower() for t in ctx.strings(f.get("productTypes"), key + ".productTypes")),
        product_namespaces=ctx.strings(f.get("productNamespaces"), key + ".productNamespaces"),
        providers=providers,
    )
