"""Faults in the source are refused and change nothing: a tampered bundle, a stale ``.jws`` of the right size,
a truncated file, a lower sequence, an expired index. The old export stays served (and verifies), the exit
code and ``sync history`` say why. Plus: a second concurrent sync is refused at once; ``--allow-same``
re-syncs the served export and repairs a damaged file in place."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from clitools import flip
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.publish import ExportRoot
from stella_mirror.sync.status import read_status
from synctools import assert_serves, history, run_cli, sync_args
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e
BUNDLE = "mirror/primary/bundle.json"


def tampered(copy: Path) -> None:
    flip(copy / BUNDLE, 30)


def stale_jws(copy: Path, previous: Path) -> None:
    old, new = previous / f"{BUNDLE}.jws", copy / f"{BUNDLE}.jws"
    assert old.stat().st_size == new.stat().st_size
    shutil.copyfile(old, new)


def truncated(copy: Path) -> None:
    path = copy / BUNDLE
    path.write_bytes(path.read_bytes()[:-20])


def test_faults_are_refused_and_the_old_export_stays(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    e1 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")], "other": [advisory("CVE-9")]}, "e1")
    assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
    e2 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-2")], "other": [advisory("CVE-9")]}, "e2")
    cases: list[tuple[str, Callable[[Path], None], int, str, str]] = [
        ("tampered bundle", tampered, 11, "digest", BUNDLE),
        ("stale .jws of the right size", lambda c: stale_jws(c, e1), 10, "signature", f"{BUNDLE}.jws"),
        ("truncated file", truncated, 11, "digest", "signed size"),
    ]
    for name, fault, code, kind, says in cases:
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(e2, copy)
        fault(copy)
        res = run_cli(*sync_args(f"file://{copy}", dest, "concelier", key, state))
        assert res.returncode == code, f"{name}: {res.stderr}"
        assert says in res.stderr, name
        assert_serves(dest, e1, key)
        run = history(state)[0]
        assert run["outcome"] == kind and says in run["error"], name
        status = read_status(dest)
        assert status is not None and status.last_outcome == kind and status.export_id == "e1"
        assert not list(dest.glob(".staging-*")), "nothing staged is left behind"

    assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
    assert_serves(dest, e2, key)

    # A lower sequence (the source rolled back to e1) is refused; so is the same sequence without --allow-same.
    res = run_cli(*sync_args(f"file://{e1}", dest, "concelier", key, state))
    assert res.returncode == 13 and "not newer than the served sequence 2" in res.stderr
    assert history(state)[0]["outcome"] == "rollback"
    assert_serves(dest, e2, key)

    # An expired index is refused.
    e3 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-3")]}, "e3", ttl=timedelta(seconds=-60))
    res = run_cli(*sync_args(f"file://{e3}", dest, "concelier", key, state))
    assert res.returncode == 12 and "expired" in res.stderr
    assert history(state)[0]["outcome"] == "expired"
    assert_serves(dest, e2, key)

    # The readable history says the same, newest first.
    text = run_cli("sync", "history", "--state-dir", state, "--limit", "2").stdout.splitlines()
    assert "expired" in text[0] and "e2 (sequence 2)" in text[0] and "error: mirror/index.json" in text[1]


def test_allow_same_repairs_the_served_export_in_place(tmp_path: Path, keydir: Path,
                                                       signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    e1 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    args = sync_args(str(up), dest, "concelier", key, state)
    assert run_cli(*args).returncode == 0
    damaged = dest / "e1" / BUNDLE
    damaged.unlink()
    damaged.write_bytes(b"not the bundle")
    assert run_cli("verify", dest, "--key", key).returncode == 11
    res = run_cli(*args)  # the index is unchanged: nothing to do without --allow-same
    assert res.returncode == 0 and history(state)[0]["outcome"] == "unchanged"
    res = run_cli(*args, "--allow-same")
    assert res.returncode == 0, res.stderr
    assert history(state)[0]["outcome"] == "repaired"
    assert_serves(dest, e1, key)


def test_a_second_concurrent_sync_is_refused_at_once(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    with ExportRoot(dest).locked():  # the lock every export and sync takes: as if another sync were running
        started = time.monotonic()
        res = run_cli(*sync_args(str(up), dest, "concelier", key, state))
        assert res.returncode == 6 and "lock held" in res.stderr
        assert time.monotonic() - started < 20
    assert not (dest / "latest").exists() and not (dest / ".sync-status.json").exists()
    assert history(state)[0]["outcome"] == "locked"
    assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0


def test_full_disk_while_staging_leaves_the_served_export(tmp_path: Path, keydir: Path,
                                                          signing_key: SigningKey) -> None:
    """A write that fails while staging (here: RLIMIT_FSIZE, which fails writes like a full disk does, with
    EFBIG instead of ENOSPC) is a local I/O error: exit 7, the served export untouched, nothing left over."""
    import resource
    import signal

    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    e1 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
    big = [advisory(f"CVE-2024-{i}") | {"description": "x" * 2000} for i in range(400)]
    publish_concelier(up, signing_key, {"primary": big}, "e2")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    import subprocess

    from synctools import CLI

    res = subprocess.run([*CLI, *map(str, sync_args(str(up), dest, "concelier", key, state))], preexec_fn=limit,
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert res.returncode == 7, res.stderr
    assert "local-io" in res.stderr
    assert_serves(dest, e1, key)
    assert not list(dest.glob(".staging-*"))
    assert history(state)[0]["outcome"] == "local-io"
    assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
