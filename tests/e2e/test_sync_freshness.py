"""Freshness end to end: the origin's signed ``generatedAt`` travels through every hop.

Chain origin → mirror A (synced from the origin's directory, served over HTTPS) → mirror B (synced from A).
A stops syncing while the origin moves on: B keeps confirming it is current with A (small lag), but its
``status`` and ``/metrics`` show the export's age growing past the threshold (the alert rule on it is covered
by ``promtool test rules``). A domain removed upstream is visible in the sync's output, its history, ``status``
and ``/metrics``; ``status`` exits non-zero on an expired served index, with or without a sync status file."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from serverproc import running
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.bundle.writer import ConcelierDomain, read_sequence, write_concelier_export
from stella_mirror.publish import ExportRoot, next_sequence
from synctools import history, log_events, run_cli, sync_args
from treebuilder import advisory, publish_concelier, stamp

pytestmark = pytest.mark.e2e


def publish_generated(root: Path, key: SigningKey, domains: list[str], export_id: str, generated: datetime) -> None:
    """An origin export generated at ``generated`` (valid for a week from then)."""
    er = ExportRoot(root)
    with er.locked():
        seq = next_sequence(er, read_sequence)
        with er.staging(export_id) as stage:
            doms = [ConcelierDomain(d, d.title(), [advisory(f"CVE-{export_id}-{d}")]) for d in domains]
            write_concelier_export(stage, stamp(export_id, seq, now=generated.replace(microsecond=0)), doms, key)
            er.commit(stage, export_id)


def metric(text: str, name: str, labels: str) -> float | None:
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def serve_env(root: Path, domains: list[str]) -> dict[str, str]:
    return {
        "CONCELIER__MIRROR__EXPORTROOT": str(root),
        "EXCITITOR__MIRROR__ENABLED": "false",
        **{f"CONCELIER__MIRROR__DOMAINS__{i}__ID": d for i, d in enumerate(domains)},
    }


def test_chain_export_age_and_removed_domains(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    origin, a, b, state = (tmp_path / n for n in ("origin", "a", "b", "state"))
    key = keydir / "mirror-key.pub"
    seven_hours_ago = datetime.now(UTC) - timedelta(hours=7)
    publish_generated(origin, signing_key, ["primary", "community"], "e1", seven_hours_ago)
    assert run_cli(*sync_args(str(origin), a, "concelier", key, state)).returncode == 0
    with running(tmp_path / "srv-a", env=serve_env(a, ["primary", "community"])) as srv_a:
        res = run_cli(*sync_args(srv_a.base, b, "concelier", key, state))
        assert res.returncode == 0, res.stderr
        # A stops syncing; the origin moves on. B is "current" with A: a small lag, but an old export.
        publish_generated(origin, signing_key, ["primary", "community"], "e2", datetime.now(UTC))
        res = run_cli(*sync_args(srv_a.base, b, "concelier", key, state, "--full"))
        assert res.returncode == 0 and history(state)[0]["outcome"] == "unchanged"
    shown = run_cli("status", "--dest", b, "--json")
    doc = orjson.loads(shown.stdout)["roots"][0]
    assert doc["lagSeconds"] < 600 and doc["exportAgeSeconds"] > 7 * 3600 - 60
    assert run_cli("status", "--dest", b).returncode == 0  # no age threshold given: the lag is fine
    old = run_cli("status", "--dest", b, "--max-age", "6h")
    assert old.returncode == 1 and "generated 7h" in old.stdout, old.stdout
    with running(tmp_path / "srv-b", env=serve_env(b, ["primary", "community"])) as srv_b:
        text = httpx.get(srv_b.url("/metrics"), timeout=30).text
    age = metric(text, "stella_mirror_export_age_seconds", 'domain="primary",product="concelier"')
    lag = metric(text, "stella_mirror_sync_lag_seconds", 'product="concelier"')
    assert age is not None and age > 7 * 3600 - 60 and lag is not None and lag < 600, text

    # The origin drops a domain: A's sync says so, and so do its history, status and metrics.
    publish_concelier(origin, signing_key, {"primary": [advisory("CVE-3")]}, "e3")
    res = run_cli(*sync_args(str(origin), a, "concelier", key, state))
    assert res.returncode == 0, res.stderr
    warnings = [e for e in log_events(res.stderr) if e["event"] == "domain-removed-upstream"]
    assert warnings and warnings[0]["domains"] == ["community"] and warnings[0]["level"] == "warning"
    run = history(state)[0]
    assert run["outcome"] == "published" and "domains removed upstream: community" in run["warning"]
    assert "removed upstream" in run_cli("sync", "history", "--state-dir", state, "--limit", "1").stdout
    shown = run_cli("status", "--dest", a)
    assert "domain community removed upstream" in shown.stdout, shown.stdout
    with running(tmp_path / "srv-a2", env=serve_env(a, ["primary", "community"])) as srv_a:
        text = httpx.get(srv_a.url("/metrics"), timeout=30).text
    assert metric(text, "stella_mirror_sync_domain_removed_upstream", 'domain="community",product="concelier"') == 1


def test_status_fails_on_an_expired_served_index(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    """A root filled by ``export`` (no sync status file) and a synced one: an expired index is stale either way."""
    root = tmp_path / "exported"
    publish_concelier(root, signing_key, {"primary": [advisory("CVE-1")]}, "e1", ttl=timedelta(seconds=-60))
    res = run_cli("status", "--dest", root, "--max-lag", "15m")
    assert res.returncode == 1 and "expired" in res.stdout, res.stdout
    fresh = tmp_path / "fresh"
    publish_concelier(fresh, signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    assert run_cli("status", "--dest", fresh).returncode == 0
