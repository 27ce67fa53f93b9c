"""``sync --watch`` against an upstream ``serve``: with no change a poll is one conditional request (304), a new
upstream export is served within poll + sync time. And the server's ``/metrics`` shows the sync's last run,
its outcome and lag from the status file, and ``export_up 0`` for a product with no export root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from serverproc import running
from stella_mirror.bundle.signing import SigningKey
from synctools import CLI, assert_serves, run_cli, sync_args
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e
POLL = 1.0


def served(dest: Path) -> str | None:
    return os.readlink(dest / "latest") if (dest / "latest").is_symlink() else None


def wait_served(dest: Path, export_id: str, log: Path, timeout: float = 60) -> float:
    started = time.monotonic()
    while served(dest) != export_id:
        assert time.monotonic() - started < timeout, log.read_text()
        time.sleep(0.05)
    return time.monotonic() - started


def test_watch_polls_conditionally_and_follows_new_exports(tmp_path: Path, keydir: Path,
                                                           signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    env = {"CONCELIER__MIRROR__EXPORTROOT": str(up), "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
           "EXCITITOR__MIRROR__ENABLED": "false"}
    log = tmp_path / "watch.log"
    with running(tmp_path / "up-srv", env=env) as sp, log.open("w") as out:
        proc = subprocess.Popen([*CLI, *map(str, sync_args(sp.base, dest, "concelier", key, state, "--watch",
                                                           "--poll", str(POLL)))], stdout=out, stderr=out)
        try:
            wait_served(dest, "e1", log)
            idle_from = time.time()
            time.sleep(5 * POLL)
            idle_to = time.time()
            e2 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-2")]}, "e2")
            lag = wait_served(dest, "e2", log)
            assert lag <= POLL + 10, f"served {lag:.1f} s after the publish"
        finally:
            proc.terminate()
            assert proc.wait(30) == 0, log.read_text()
        time.sleep(1.2)  # the access log is flushed about once a second
        records = [json.loads(line) for line in sp.access_lines()]
    idle = [r for r in records if idle_from + 0.5 <= datetime.fromisoformat(r["time"]).timestamp() <= idle_to - 0.5]
    assert len(idle) >= 3, records
    assert all(r["route"] == "concelier.index" and r["status"] == 304 for r in idle), idle
    assert_serves(dest, e2, key)


def metric(text: str, name: str, labels: str) -> float | None:
    m = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def test_metrics_show_the_last_sync_and_a_missing_root(tmp_path: Path, keydir: Path,
                                                      signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    env = {"CONCELIER__MIRROR__EXPORTROOT": str(dest), "CONCELIER__MIRROR__DOMAINS__0__ID": "primary"}
    with running(tmp_path / "srv", env=env) as sp:
        text = httpx.get(sp.url("/metrics")).text
        assert metric(text, "stella_mirror_export_up", 'domain="",product="excititor"') == 0.0
        assert "stella_mirror_sync_last_run_ok{" not in text, "no series before any sync"
        assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
        text = httpx.get(sp.url("/metrics")).text
        assert metric(text, "stella_mirror_sync_last_run_ok", 'product="concelier"') == 1.0
        lag = metric(text, "stella_mirror_sync_lag_seconds", 'product="concelier"')
        assert lag is not None and 0 <= lag < 60
        success = metric(text, "stella_mirror_sync_last_success_timestamp_seconds", 'product="concelier"')
        assert success is not None and abs(success - time.time()) < 60
        assert metric(text, "stella_mirror_sync_last_attempt_timestamp_seconds", 'product="concelier"') is not None
        assert metric(text, "stella_mirror_export_up", 'domain="primary",product="concelier"') == 1.0
        assert 'product="excititor"' not in "".join(
            line for line in text.splitlines() if line.startswith("stella_mirror_sync_"))
        # A failed run: last_run_ok drops to 0, the last success stays.
        bad = run_cli(*sync_args(str(tmp_path / "nowhere"), dest, "concelier", key, state))
        assert bad.returncode != 0
        text = httpx.get(sp.url("/metrics")).text
        assert metric(text, "stella_mirror_sync_last_run_ok", 'product="concelier"') == 0.0
        assert metric(text, "stella_mirror_sync_last_success_timestamp_seconds", 'product="concelier"') == success
