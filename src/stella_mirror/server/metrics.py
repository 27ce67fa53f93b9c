"""Prometheus metrics (S15, S16): cheap to record on every request, computed at scrape time where possible.

Recording is a few dictionary increments per request (no locks: one event loop per process). With several
worker processes each one writes its counters to ``<dir>/<pid>.json`` about once a second; ``/metrics`` on
any worker sums all files (its own written fresh), so counters cover every worker and never go backwards
when a worker is replaced. Freshness gauges — export age, index ``expiresAt``, active sequence — are read
from the active signed indexes at scrape time.

Exposed:

* ``stella_mirror_requests_total{product,domain,route,status}``
* ``stella_mirror_response_bytes_total{product,domain,route}``
* ``stella_mirror_request_duration_seconds{product,route}`` (histogram)
* ``stella_mirror_auth_failures_total{product,domain,reason}``
* ``stella_mirror_quota_rejections_total{product,domain,budget}``, ``stella_mirror_quota_unavailable_total``
* ``stella_mirror_export_age_seconds{product,domain}`` (now − ``generatedAt``),
  ``stella_mirror_index_expires_timestamp_seconds{product,domain}``,
  ``stella_mirror_export_sequence{product,domain}``
* ``stella_mirror_export_up{product,domain}`` (1 when the active index parses),
  ``stella_mirror_reloads_total{result}``
* ``stella_mirror_export_up{product,domain=""} 0`` for a served product with no export root configured:
  a series that says "down" rather than no series at all (absent series do not fire alerts). The empty
  ``domain`` label marks the product as a whole; it never collides with a domain id (those are non-empty).
* From the sync's status file in each served product's export root (``sync/status.py``), read at scrape
  time and absent for a root no sync has written to: ``stella_mirror_sync_last_success_timestamp_seconds``,
  ``stella_mirror_sync_last_attempt_timestamp_seconds``, ``stella_mirror_sync_last_run_ok`` (1/0) and
  ``stella_mirror_sync_lag_seconds`` (now − lastSuccessAt; runbook §7 alerts past 15 minutes), all
  ``{product}``.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from stella_mirror.server.context import RequestContext
from stella_mirror.timeutil import parse_rfc3339

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SNAPSHOT_INTERVAL = 1.0


def _key(*parts: str) -> str:
    return "\x1f".join(parts)


def _labels(key: str) -> list[str]:
    return key.split("\x1f")


class Metrics:
    """This process's counters."""

    def __init__(self, snapshot_dir: Path | None = None) -> None:
        self.requests: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {}
        """route key → bucket counts (len(BUCKETS)+1, last is +Inf) followed by the sum."""
        self.auth_failures: dict[str, int] = {}
        self.quota_rejections: dict[str, int] = {}
        self.quota_unavailable: dict[str, int] = {}
        self.reloads: dict[str, int] = {}
        self.snapshot_dir = snapshot_dir
        self._last_snapshot = 0.0

    # --- recording (hot path) ----------------------------------------------------------------------

    def observe(self, ctx: RequestContext, status: int, nbytes: int, seconds: float) -> None:
        """Count one finished request."""
        product = ctx.product or "-"
        domain = ctx.domain.domain_id if ctx.domain is not None else "-"
        route = ctx.route or "-"
        k = _key(product, domain, route, str(status))
        self.requests[k] = self.requests.get(k, 0) + 1
        if nbytes:
            kb = _key(product, domain, route)
            self.bytes[kb] = self.bytes.get(kb, 0) + nbytes
        kl = _key(product, route)
        hist = self.latency.get(kl)
        if hist is None:
            hist = self.latency[kl] = [0.0] * (len(BUCKETS) + 2)
        hist[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def auth_failure(self, ctx: RequestContext, reason: str) -> None:
        """``AuthGate`` ``on_failure`` hook."""
        k = _key(ctx.product or "-", ctx.domain.domain_id if ctx.domain else "-", reason)
        self.auth_failures[k] = self.auth_failures.get(k, 0) + 1

    def quota_rejected(self, ctx: RequestContext) -> None:
        """``QuotaGate`` ``on_reject`` hook."""
        budget = "download" if ctx.route_kind == "download" else "index"
        k = _key(ctx.product or "-", ctx.domain.domain_id if ctx.domain else "-", budget)
        self.quota_rejections[k] = self.quota_rejections.get(k, 0) + 1

    def quota_degraded(self, ctx: RequestContext) -> None:
        """``QuotaGate`` ``on_unavailable`` hook."""
        k = _key(ctx.product or "-", ctx.domain.domain_id if ctx.domain else "-")
        self.quota_unavailable[k] = self.quota_unavailable.get(k, 0) + 1

    def reload(self, ok: bool) -> None:
        k = "ok" if ok else "failed"
        self.reloads[k] = self.reloads.get(k, 0) + 1

    # --- multi-process snapshots -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "bytes": self.bytes,
            "latency": self.latency,
            "auth_failures": self.auth_failures,
            "quota_rejections": self.quota_rejections,
            "quota_unavailable": self.quota_unavailable,
            "reloads": self.reloads,
        }

    def write_snapshot(self) -> None:
        """Write this process's counters for the other workers' scrapes (atomic rename)."""
        if self.snapshot_dir is None:
            return
        path = self.snapshot_dir / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(orjson.dumps(self.snapshot()))
            os.replace(tmp, path)
        self._last_snapshot = time.monotonic()

    def maybe_snapshot(self) -> None:
        if self.snapshot_dir is not None and time.monotonic() - self._last_snapshot >= SNAPSHOT_INTERVAL:
            self.write_snapshot()

    def all_snapshots(self) -> list[dict[str, Any]]:
        """Every worker's counters (this one's current values included)."""
        if self.snapshot_dir is None:
            return [self.snapshot()]
        self.write_snapshot()
        out = []
        for path in self.snapshot_dir.glob("*.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                out.append(orjson.loads(path.read_bytes()))
        return out


def _sum(snaps: Iterable[dict[str, Any]], name: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for snap in snaps:
        for k, v in snap.get(name, {}).items():
            total[k] = total.get(k, 0) + v
    return total


def _sum_hist(snaps: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    total: dict[str, list[float]] = {}
    for snap in snaps:
        for k, v in snap.get("latency", {}).items():
            acc = total.setdefault(k, [0.0] * len(v))
            for i, x in enumerate(v):
                acc[i] += x
    return total


class FreshnessSource:
    """What the collector needs about active exports: ``(product, domain, index document or None)``, and
    each served product's export root (None when none is configured)."""

    def indexes(self) -> Iterator[tuple[str, str, dict[str, Any] | None]]:  # pragma: no cover - interface
        raise NotImplementedError

    def roots(self) -> Iterator[tuple[str, Path | None]]:
        return iter(())

    def certificates(self) -> Iterator[tuple[str, Path]]:
        """``(domain, certificate file)`` of every configured certificate (``_default``: ``mirror.tls``)."""
        return iter(())


_CERT_EXPIRY: dict[tuple[Path, int, int], float | None] = {}


def certificate_expiry(path: Path) -> float | None:
    """The notAfter of the first certificate in a PEM file (unix seconds), None when it cannot be read; parsed
    once per file version (path, size, mtime)."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _CERT_EXPIRY:
        from cryptography import x509

        if len(_CERT_EXPIRY) > 256:
            _CERT_EXPIRY.clear()
        try:
            _CERT_EXPIRY[key] = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            _CERT_EXPIRY[key] = None
    return _CERT_EXPIRY[key]


class MirrorCollector(Collector):
    """Turns summed snapshots plus the freshness source into metric families at scrape time."""

    def __init__(self, metrics: Metrics, freshness: FreshnessSource) -> None:
        self.metrics = metrics
        self.freshness = freshness

    def collect(self) -> Iterator[Any]:
        snaps = self.metrics.all_snapshots()
        yield self._counter(
            snaps,
            "requests",
            "stella_mirror_requests",
            "HTTP requests answered",
            ["product", "domain", "route", "status"],
        )
        yield self._counter(
            snaps, "bytes", "stella_mirror_response_bytes", "Response body bytes sent", ["product", "domain", "route"]
        )
        hist = HistogramMetricFamily(
            "stella_mirror_request_duration_seconds", "Time to answer a request", labels=["product", "route"]
        )
        for k, counts in sorted(_sum_hist(snaps).items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*BUCKETS, float("inf")), counts[:-1], strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            hist.add_metric(_labels(k), buckets, counts[-1])
        yield hist
        yield self._counter(
            snaps,
            "auth_failures",
            "stella_mirror_auth_failures",
            "Requests refused by authentication",
            ["product", "domain", "reason"],
        )
        yield self._counter(
            snaps,
            "quota_rejections",
            "stella_mirror_quota_rejections",
            "Requests refused with 429",
            ["product", "domain", "budget"],
        )
        yield self._counter(
            snaps,
            "quota_unavailable",
            "stella_mirror_quota_unavailable",
            "Requests the quota backend could not count (answered by fail mode)",
            ["product", "domain"],
        )
        fam = CounterMetricFamily("stella_mirror_reloads", "Configuration reloads", labels=["result"])
        for k, v in sorted(_sum(snaps, "reloads").items()):
            fam.add_metric([k], v)
        yield fam
        yield from self._freshness()

    @staticmethod
    def _counter(snaps: list[dict[str, Any]], kind: str, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        """One counter family summed over every worker's snapshot."""
        fam = CounterMetricFamily(name, doc, labels=labels)
        for k, v in sorted(_sum(snaps, kind).items()):
            fam.add_metric(_labels(k), v)
        return fam

    def _freshness(self) -> Iterator[Any]:
        now = time.time()
        age = GaugeMetricFamily(
            "stella_mirror_export_age_seconds",
            "Seconds since the active export was generated",
            labels=["product", "domain"],
        )
        expires = GaugeMetricFamily(
            "stella_mirror_index_expires_timestamp_seconds",
            "expiresAt of the active signed index (unix seconds)",
            labels=["product", "domain"],
        )
        seq = GaugeMetricFamily(
            "stella_mirror_export_sequence", "sequence of the active signed index", labels=["product", "domain"]
        )
        up = GaugeMetricFamily(
            "stella_mirror_export_up", "1 when the active export's index parses", labels=["product", "domain"]
        )
        for product, root in self.freshness.roots():
            if root is None:
                up.add_metric([product, ""], 0.0)
        for product, domain, doc in self.freshness.indexes():
            labels = [product, domain]
            up.add_metric(labels, 1.0 if doc is not None else 0.0)
            if doc is None:
                continue
            with contextlib.suppress(Exception):
                age.add_metric(labels, now - parse_rfc3339(str(doc["generatedAt"])).timestamp())
            with contextlib.suppress(Exception):
                expires.add_metric(labels, parse_rfc3339(str(doc["expiresAt"])).timestamp())
            if isinstance(doc.get("sequence"), int):
                seq.add_metric(labels, float(doc["sequence"]))
        yield from (age, expires, seq, up)
        yield from self._sync(now)
        yield self._tls(now)

    def _tls(self, now: float) -> GaugeMetricFamily:
        """Days left on each configured certificate (negative once expired; no series for an unreadable file)."""
        fam = GaugeMetricFamily(
            "stella_mirror_tls_days_left",
            "Days until the configured certificate expires (negative: expired)",
            labels=["domain"],
        )
        seen = set()
        for domain, path in self.freshness.certificates():
            if domain in seen:
                continue
            seen.add(domain)
            expiry = certificate_expiry(path)
            if expiry is not None:
                fam.add_metric([domain], round((expiry - now) / 86400, 2))
        return fam

    def _sync(self, now: float) -> Iterator[Any]:
        """The last sync into each served root, from its status file (no series for a root without one)."""
        from stella_mirror.sync.status import read_status

        fams = {
            name: GaugeMetricFamily(f"stella_mirror_sync_{name}", doc, labels=["product"])
            for name, doc in (
                ("last_success_timestamp_seconds", "When the last sync confirmed the export root current (unix s)"),
                ("last_attempt_timestamp_seconds", "When the last sync into the export root started (unix s)"),
                ("last_run_ok", "1 when the last sync into the export root succeeded"),
                ("lag_seconds", "Seconds since a sync last confirmed the export root current"),
            )
        }
        removed = GaugeMetricFamily("stella_mirror_sync_domain_removed_upstream",
                                    "1 for a domain the last published sync found removed upstream",
                                    labels=["product", "domain"])
        damaged = GaugeMetricFamily("stella_mirror_sync_damaged_files",
                                    "Local files the last sync found damaged and could not repair (sync --repair)",
                                    labels=["product"])
        for product, root in self.freshness.roots():
            status = read_status(root) if root is not None else None
            if status is None:
                continue
            for domain in status.removed_upstream:
                removed.add_metric([product, domain], 1.0)
            damaged.add_metric([product], float(len(status.damaged)))
            fams["last_attempt_timestamp_seconds"].add_metric([product], status.last_attempt_at.timestamp())
            fams["last_run_ok"].add_metric([product], 1.0 if status.ok else 0.0)
            if status.last_success_at is not None:
                fams["last_success_timestamp_seconds"].add_metric([product], status.last_success_at.timestamp())
                lag = status.lag_seconds(datetime.fromtimestamp(now, UTC))
                fams["lag_seconds"].add_metric([product], lag if lag is not None else 0.0)
        yield from fams.values()
        yield from (removed, damaged)


def request_counts(metrics: Metrics) -> dict[tuple[str, str], tuple[int, int]]:
    """Requests and 429 answers so far per ``(product, domain)``, over every worker (the status page)."""
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for key, n in _sum(metrics.all_snapshots(), "requests").items():
        product, domain, _route, status = _labels(key)
        total, rejected = counts.get((product, domain), (0, 0))
        counts[product, domain] = (total + int(n), rejected + (int(n) if status == "429" else 0))
    return counts


def render(metrics: Metrics, freshness: FreshnessSource) -> bytes:
    """The Prometheus text exposition of everything."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector(metrics, freshness))
    return generate_latest(registry)
