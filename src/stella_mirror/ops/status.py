"""What each export root serves and how fresh it is: the one model behind ``stella-mirror status`` and the
server's ``/status`` page (B9, runbook §7).

Per root: the served export (id, sequence), the last sync (``.sync-status.json``, :mod:`stella_mirror.sync.status`;
none means the root is filled by ``export`` on this host, which is shown as such, not as an error) and its lag.
Per domain: exportId, age, sequence, expiresAt, sizes, item counts and signing key ids, read from the active
signed index (not verified here: ``verify`` does that). A root or domain is *stale* when the sync lag passes
the threshold (15 minutes, runbook §7), the index has expired, or nothing usable is served; an index
expiring within 24 hours is reported as a problem.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from stella_mirror.bundle.layout import LATEST
from stella_mirror.bundle.signing import b64url_decode
from stella_mirror.sync.status import SyncStatus, read_status
from stella_mirror.timeutil import parse_rfc3339, rfc3339

DEFAULT_MAX_LAG = timedelta(minutes=15)
EXPIRY_WARNING = timedelta(hours=24)


@dataclass
class DomainStatus:
    """One domain of one product as served."""

    product: str
    domain_id: str
    display_name: str = ""
    export_id: str | None = None
    sequence: int | None = None
    generated_at: str | None = None
    expires_at: str | None = None
    age_seconds: float | None = None
    size_bytes: int = 0
    items: int = 0
    """Advisories (Concelier) or records (Excititor)."""
    key_ids: list[str] = field(default_factory=list)
    requests: int | None = None
    rejected: int | None = None
    """Requests answered 429 (quota)."""
    stale: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "domainId": self.domain_id,
            "displayName": self.display_name,
            "exportId": self.export_id,
            "sequence": self.sequence,
            "generatedAt": self.generated_at,
            "expiresAt": self.expires_at,
            "ageSeconds": self.age_seconds,
            "sizeBytes": self.size_bytes,
            "items": self.items,
            "keyIds": self.key_ids,
            "requests": self.requests,
            "quotaRejections": self.rejected,
            "stale": self.stale,
            "problems": self.problems,
        }


@dataclass
class RootStatus:
    """One export root: what it serves, its last sync, its domains."""

    product: str
    root: Path | None
    export_id: str | None = None
    sequence: int | None = None
    sync: SyncStatus | None = None
    lag_seconds: float | None = None
    export_age_seconds: float | None = None
    """now − the served export's signed ``generatedAt`` (set by the origin and unchanged through every mirror of
    a chain): unlike the lag, it grows when an upstream mirror stops."""
    stale: bool = False
    problems: list[str] = field(default_factory=list)
    domains: list[DomainStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        sync = self.sync
        return {
            "product": self.product,
            "root": str(self.root) if self.root else None,
            "exportId": self.export_id,
            "sequence": self.sequence,
            "lastSync": None
            if sync is None
            else {
                "lastSuccessAt": rfc3339(sync.last_success_at) if sync.last_success_at else None,
                "lastAttemptAt": rfc3339(sync.last_attempt_at),
                "lastOutcome": sync.last_outcome,
                "source": sync.source,
            },
            "lagSeconds": self.lag_seconds,
            "exportAgeSeconds": self.export_age_seconds,
            "damaged": list(sync.damaged) if sync else [],
            "removedUpstream": list(sync.removed_upstream) if sync else [],
            "stale": self.stale,
            "problems": self.problems,
            "domains": [d.as_dict() for d in self.domains],
        }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _jws_kid(path: Path) -> str | None:
    """The ``kid`` of a detached JWS's protected header (reported, not verified)."""
    with contextlib.suppress(OSError, ValueError, orjson.JSONDecodeError, AttributeError):
        header = orjson.loads(b64url_decode(path.read_bytes().split(b".", 1)[0]))
        kid = header.get("kid")
        return kid if isinstance(kid, str) else None
    return None


def _fill(dom: DomainStatus, index: dict[str, Any], index_kid: str | None, now: datetime) -> None:
    """Identity and freshness from a signed index document (``index_kid``: the key id of its JWS)."""
    dom.export_id = str(index.get("exportId")) if index.get("exportId") is not None else None
    seq = index.get("sequence")
    dom.sequence = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    dom.generated_at, dom.expires_at = index.get("generatedAt"), index.get("expiresAt")
    with contextlib.suppress(Exception):
        dom.age_seconds = max(0.0, (now - parse_rfc3339(str(dom.generated_at))).total_seconds())
    try:
        expires = parse_rfc3339(str(dom.expires_at))
    except Exception:
        dom.problems.append("the index has no valid expiresAt")
        dom.stale = True
    else:
        if expires <= now:
            dom.problems.append(f"the index expired at {dom.expires_at}")
            dom.stale = True
        elif expires - now <= EXPIRY_WARNING:
            dom.problems.append(f"the index expires within 24 hours ({dom.expires_at})")
    if index_kid:
        dom.key_ids.append(index_kid)


def _signed_key(ref: Any) -> str | None:
    sig = ref.get("signature") if isinstance(ref, dict) else None
    kid = sig.get("keyId") if isinstance(sig, dict) else None
    return kid if isinstance(kid, str) else None


def _count(ref: Any, key: str) -> int:
    value = ref.get(key) if isinstance(ref, dict) else None
    return value if isinstance(value, int) else 0


def _size(ref: Any) -> int:
    return _count(ref, "sizeBytes")


def _concelier(export: Path, wanted: list[str] | None, now: datetime) -> list[DomainStatus]:
    index_path = export / "mirror" / "index.json"
    index = _read_json(index_path)
    if index is None:
        raise ValueError("no readable mirror/index.json in the served export")
    index_kid = _jws_kid(index_path.with_name("index.json.jws"))  # one index for every domain: read once
    out = []
    for entry in index.get("domains") or []:
        if not isinstance(entry, dict) or (wanted is not None and entry.get("domainId") not in wanted):
            continue
        dom = DomainStatus("concelier", str(entry.get("domainId")), str(entry.get("displayName") or ""))
        _fill(dom, index, index_kid, now)
        dom.size_bytes = _size(entry.get("manifest")) + _size(entry.get("bundle"))
        dom.items = _count(entry, "advisoryCount")
        kid = _signed_key(entry.get("bundle"))
        if kid and kid not in dom.key_ids:
            dom.key_ids.append(kid)
        out.append(dom)
    return out


def _excititor(export: Path, wanted: list[str] | None, now: datetime) -> list[DomainStatus]:
    mirror = export / "mirror"
    ids = wanted if wanted is not None else sorted(p.name for p in mirror.iterdir() if (p / "index.json").is_file())
    out = []
    for domain_id in ids:
        index_path = mirror / domain_id / "index.json"
        index = _read_json(index_path)
        dom = DomainStatus("excititor", domain_id)
        if index is None:
            dom.problems.append("no readable index in the served export")
            dom.stale = True
            out.append(dom)
            continue
        dom.display_name = str(index.get("displayName") or "")
        _fill(dom, index, _jws_kid(index_path.with_name("index.json.jws")), now)
        for entry in index.get("exports") or []:
            if isinstance(entry, dict):
                dom.size_bytes += _size(entry)
                dom.items += _count(entry, "recordCount")
                kid = _signed_key(entry)
                if kid and kid not in dom.key_ids:
                    dom.key_ids.append(kid)
        out.append(dom)
    return out


def root_status(
    product: str,
    root: Path | None,
    now: datetime,
    active: str = LATEST,
    domains: list[str] | None = None,
    max_lag: timedelta = DEFAULT_MAX_LAG,
    max_age: timedelta | None = None,
) -> RootStatus:
    """The status of one export root; ``domains`` limits which are reported (None: all it serves). A root is
    stale past ``max_lag`` since its last successful sync, past ``max_age`` since its export was generated at
    the origin (when given), with an expired index, or when nothing usable is served."""
    status = RootStatus(product, root)
    if root is None:
        status.problems.append("Mirror export root is not configured")
        status.stale = True
        return status
    status.sync = read_status(root)
    if status.sync is not None:
        lag = status.sync.lag_seconds(now)
        status.lag_seconds = lag
        if lag is None or lag > max_lag.total_seconds():
            status.stale = True
            status.problems.append(
                "never synced successfully" if lag is None else f"last successful sync {int(lag // 60)} min ago"
            )
        if not status.sync.ok:
            status.problems.append(f"last sync attempt failed: {status.sync.last_outcome}")
        if status.sync.damaged:
            status.problems.append(f"{len(status.sync.damaged)} damaged file(s) found by the last sync, e.g. "
                                   f"{status.sync.damaged[0]} (stella-mirror sync --repair)")
        for domain_id in status.sync.removed_upstream:
            status.problems.append(f"domain {domain_id} removed upstream (no longer in the synced export)")
    export = root / active
    try:
        export = export.resolve(strict=True)
        read = _concelier if product == "concelier" else _excititor
        status.domains = read(export, domains, now)
    except (OSError, ValueError) as exc:
        reason = "nothing is published yet" if isinstance(exc, FileNotFoundError) else str(exc)
        status.problems.append(f"{root}: {reason}")
        status.stale = True
        return status
    if status.domains:
        status.export_id, status.sequence = status.domains[0].export_id, status.domains[0].sequence
    ages = [d.age_seconds for d in status.domains if d.age_seconds is not None]
    status.export_age_seconds = max(ages) if ages else None
    if max_age is not None and status.export_age_seconds is not None and \
            status.export_age_seconds > max_age.total_seconds():
        status.stale = True
        status.problems.append(f"the served export was generated {age_text(status.export_age_seconds)} ago "
                               f"at the origin (more than {age_text(max_age.total_seconds())})")
    status.stale = status.stale or any(d.stale for d in status.domains)  # an expired index makes the root stale
    for dom in status.domains:
        dom.stale = dom.stale or status.stale
    return status


def age_text(seconds: float | None) -> str:
    """``3d 4h``, ``12 min``, ``40 s`` — or ``-``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 60} min" if s >= 60 else f"{s} s"
