"""What readers and crashes see: ``kill -9`` of the sync at 20 random points leaves the served export intact (it
verifies) and the next run completes; a reader fetching manifest+bundle pairs through ``serve`` during 20
consecutive syncs sees no inconsistent pair and no failed request."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from serverproc import running
from stella_mirror.bundle.signing import SigningKey
from synctools import CLI, files, run_cli, sync_args
from treebuilder import advisory, publish_concelier

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
DOMAINS = ("a", "b", "c", "d")


def publish(up: Path, key: SigningKey, n: int, size: int = 300) -> Path:
    """Export ``e<n>`` with four domains of ``size`` advisories each (about 0.6 MB per bundle)."""
    doms = {d: [advisory(f"CVE-{n}-{d}-{i}") | {"description": f"{n}{d}" * 1000} for i in range(size)]
            for d in DOMAINS}
    return publish_concelier(up, key, doms, f"e{n}", keep=30)


def test_kill_9_at_random_points(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    rng = random.Random(int(os.environ.get("KILL_SEED", "1009")))
    publish(up, signing_key, 0)
    started = time.monotonic()
    res = run_cli(*sync_args(str(up), dest, "concelier", key, state))
    assert res.returncode == 0, res.stderr
    duration = time.monotonic() - started  # of a whole run: kill points are drawn within it
    kills, n = 0, 0
    while kills < 20:
        n += 1
        assert n <= 60, f"only {kills} of {n - 1} runs were killed before they finished"
        publish(up, signing_key, n)
        served_before = os.readlink(dest / "latest")
        proc = subprocess.Popen([*CLI, *map(str, sync_args(str(up), dest, "concelier", key, state))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        served = os.readlink(dest / "latest")
        assert served in (served_before, f"e{n}")
        check = run_cli("verify", dest, "--key", key)
        assert check.returncode == 0, f"after kill {kills}: {check.stdout}{check.stderr}"
        started = time.monotonic()
        res = run_cli(*sync_args(str(up), dest, "concelier", key, state))
        assert res.returncode == 0, f"the run after kill {kills}: {res.stderr}"
        duration = time.monotonic() - started
        assert os.readlink(dest / "latest") == f"e{n}"
        assert files(dest / f"e{n}") == files(up / f"e{n}")
        assert not list(dest.glob(".staging-*")) and not list(dest.glob(".latest-*"))


def test_readers_never_see_an_inconsistent_pair(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    publish(up, signing_key, 0, size=50)
    assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
    env = {"CONCELIER__MIRROR__EXPORTROOT": str(dest), "EXCITITOR__MIRROR__ENABLED": "false",
           **{f"CONCELIER__MIRROR__DOMAINS__{i}__ID": d for i, d in enumerate(DOMAINS)}}
    stop = threading.Event()
    seen: dict[str, int] = {"pairs": 0}
    problems: list[str] = []

    def reader(base: str) -> None:
        with httpx.Client(base_url=base, timeout=30, headers={"Accept-Encoding": "identity"}) as c:
            while not stop.is_set():
                for domain in DOMAINS:
                    m = c.get(f"/concelier/exports/mirror/{domain}/manifest.json")
                    if m.status_code != 200:
                        problems.append(f"manifest {m.status_code}")
                        continue
                    manifest = m.json()
                    b = c.get(f"/concelier/exports/@{manifest['exportId']}/mirror/{domain}/bundle.json")
                    if b.status_code != 200:
                        problems.append(f"bundle {b.status_code}")
                        continue
                    # The bundle names no export (schemaVersion 2): the manifest's signed digest pins it.
                    digest = "sha256:" + hashlib.sha256(b.content).hexdigest()
                    if digest != manifest["bundle"]["digest"]:
                        problems.append(f"inconsistent pair in {manifest['exportId']}")
                    seen["pairs"] += 1

    with running(tmp_path / "srv", env=env) as sp:
        thread = threading.Thread(target=reader, args=(sp.base,))
        thread.start()
        try:
            for n in range(1, 21):
                publish(up, signing_key, n, size=50)
                res = run_cli(*sync_args(str(up), dest, "concelier", key, state))
                assert res.returncode == 0, res.stderr
                assert os.readlink(dest / "latest") == f"e{n}"
        finally:
            stop.set()
            thread.join(60)
    assert not problems, problems[:5]
    assert seen["pairs"] > 40
