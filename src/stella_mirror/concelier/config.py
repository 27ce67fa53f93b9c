"""The Concelier export configuration: a YAML file or command-line flags, one typed result.

File form (relative paths resolve against the file's folder)::

    sources:
      - kind: osv            # osv | csaf
        path: corpus/osv
        name: community-osv  # optional; defaults to the folder's name (here "osv")
      - kind: csaf
        path: corpus/csaf
    domains:
      - id: primary
        displayName: Primary
      - id: community
        displayName: Community
        filter: "ecosystem:PyPI,Go"     # see concelier.filters
    expiresIn: 7d
    keep: 3
    maxDocumentBytes: 33554432
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from stella_mirror.concelier.export import DomainSpec
from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.sources import DEFAULT_MAX_DOCUMENT_BYTES, KINDS, SourceSpec
from stella_mirror.errors import ConfigError
from stella_mirror.timeutil import parse_duration

DEFAULT_DOMAIN = DomainSpec("primary", "Primary")


@dataclass
class ConcelierExportConfig:
    """Sources, domains and publication settings of an export."""

    sources: list[SourceSpec] = field(default_factory=list)
    domains: list[DomainSpec] = field(default_factory=list)
    expires_in: timedelta | None = None
    keep: int | None = None
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES


def display_name(domain_id: str) -> str:
    """``community`` → ``Community``."""
    return domain_id.replace("-", " ").replace("_", " ").title()


def parse_source_flag(value: str, priority: int, base: Path | None = None) -> SourceSpec:
    """``osv:DIR`` or ``csaf:DIR``, named after the folder (``osv:pypa`` for ``osv:corpus/pypa``), or
    ``osv:NAME=DIR`` to name the source."""
    kind, sep, rest = value.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise ConfigError("--source", f"{value!r} is not KIND:DIR with KIND one of {', '.join(KINDS)}")
    name = None
    if "=" in rest and not Path(rest).exists():
        name, _, rest = rest.partition("=")
    path = Path(rest)
    if base is not None and not path.is_absolute():
        path = base / path
    return SourceSpec(name=name or folder_name(path, kind), kind=kind, path=path, priority=priority)


def folder_name(path: Path, kind: str) -> str:
    """A source's default name: its folder's name (``corpus/pypa/`` → ``pypa``; ``.`` → the resolved folder's)."""
    name = path.name if path.name not in ("", "..") else path.resolve().name
    return name or kind


def parse_domain_flag(value: str) -> DomainSpec:
    """``ID`` or ``ID=FILTER``."""
    domain_id, _, filt = value.partition("=")
    domain_id = domain_id.strip()
    return DomainSpec(domain_id, display_name(domain_id), DomainFilter.parse(filt, f"--domain {domain_id}"))


def _get(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str, required: bool = False) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}{key}", "is required")
        return None
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise ConfigError(f"{where}{key}", f"has the wrong type ({type(value).__name__})")
    return value


def load_config(path: Path) -> ConcelierExportConfig:
    """Read an export configuration file; errors name the key path."""
    import yaml  # here, not at the top: a flag-only export need not compile PyYAML's patterns

    try:
        raw = yaml.safe_load(path.read_bytes())
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config", f"{path} must hold a mapping")
    base = path.resolve().parent
    cfg = ConcelierExportConfig()
    for i, src in enumerate(_get(raw, "sources", list, "", required=True)):
        where = f"sources.{i}."
        if not isinstance(src, dict):
            raise ConfigError(f"sources.{i}", "must be a mapping with kind and path")
        kind = _get(src, "kind", str, where, required=True)
        if kind not in KINDS:
            raise ConfigError(f"{where}kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        spath = Path(_get(src, "path", str, where, required=True))
        cfg.sources.append(
            SourceSpec(
                name=_get(src, "name", str, where) or folder_name(spath, kind),
                kind=kind,
                path=spath if spath.is_absolute() else base / spath,
                priority=i,
            )
        )
    for i, dom in enumerate(_get(raw, "domains", list, "") or []):
        where = f"domains.{i}."
        if not isinstance(dom, dict):
            raise ConfigError(f"domains.{i}", "must be a mapping with id")
        domain_id = _get(dom, "id", str, where, required=True)
        cfg.domains.append(
            DomainSpec(
                domain_id,
                _get(dom, "displayName", str, where) or display_name(domain_id),
                DomainFilter.parse(_get(dom, "filter", str, where), f"{where}filter"),
            )
        )
    expires = _get(raw, "expiresIn", str, "")
    cfg.expires_in = parse_duration(expires, "expiresIn") if expires else None
    cfg.keep = _get(raw, "keep", int, "")
    size = _get(raw, "maxDocumentBytes", int, "")
    if size is not None:
        if size < 1:
            raise ConfigError("maxDocumentBytes", "must be positive")
        cfg.max_document_bytes = size
    return cfg


SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "concelier"


def sample_sources() -> list[SourceSpec]:
    """The built-in, invented sample advisories (for demos and smoke tests): OSV first, then CSAF."""
    return [
        SourceSpec(name="osv", kind="osv", path=SAMPLES / "osv", priority=0),
        SourceSpec(name="csaf", kind="csaf", path=SAMPLES / "csaf", priority=1),
    ]
