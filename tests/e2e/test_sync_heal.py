"""A mirror heals what it serves: local files are trusted by their SHA-256, never their size.

A byte flipped (same size) in a served file — hard-linked into the kept export too — and in a kept export's own
file: ``verify`` names every damaged file, the next sync of a new upstream export publishes (exit 0), fetching
the damaged file's bytes again instead of linking them, and the result verifies; the status file, ``status`` and
the history show the damage left in the kept export. Bit rot that keeps the mtime (so the sync's record of the
file still matches) is caught by the final verification and fetched again. ``sync --repair`` on an unchanged
upstream repairs the served export in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clitools import flip
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.sync.status import read_status
from synctools import assert_serves, history, run_cli, sync_args
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e
OTHER, PRIMARY = "mirror/other/bundle.json", "mirror/primary/bundle.json"
SHARED, OWN = "mirror/b/exports/k1/k1.json", "mirror/a/exports/k1/k1.json"


def test_damaged_served_and_kept_files_are_fetched_again(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    args = sync_args(str(up), dest, "excititor", key, state)

    def export(n: int) -> Path:  # domain b's artifact is the same in every export: reused, one inode
        return publish_excititor(up, signing_key, {"a": {"k1": [{"v": n}]}, "b": {"k1": [{"v": "b"}]}}, f"e{n}")

    for n in (1, 2):
        export(n)
        assert run_cli(*args).returncode == 0
    assert (dest / "e1" / SHARED).stat().st_ino == (dest / "e2" / SHARED).stat().st_ino, "reused by a hard link"

    flip(dest / "e2" / SHARED, 5)  # served, and the kept e1's copy with it (one inode)
    flip(dest / "e1" / OWN, 5)  # a kept export's own file
    res = run_cli("verify", dest, "--key", key)
    assert res.returncode == 11 and f"damaged: {SHARED}" in res.stderr, res.stderr

    e3 = export(3)
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e3, key)
    assert (dest / "e3" / SHARED).stat().st_ino != (dest / "e2" / SHARED).stat().st_ino, "fetched, not linked"
    run = history(state)[0]
    assert run["outcome"] == "published" and run["filesFetched"] >= 2 and "damaged" in (run["warning"] or "")
    status = read_status(dest)
    assert status is not None and f"e2/{SHARED}" in status.damaged and f"e1/{SHARED}" in status.damaged
    shown = run_cli("status", "--dest", dest)
    assert "damaged file(s) found by the last sync" in shown.stdout, shown.stdout

    # Bit rot keeps the mtime: the sync's record of the file still matches, so the final verification catches it.
    served = dest / "e3" / SHARED
    st = served.stat()
    flip(served, 6)
    os.utime(served, ns=(st.st_atime_ns, st.st_mtime_ns))
    e4 = export(4)
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e4, key)

    # --repair also heals the kept exports' damaged copies of bytes the served export holds (e1 was pruned).
    status = read_status(dest)
    assert status is not None and {f"e2/{SHARED}", f"e3/{SHARED}"} <= set(status.damaged)
    res = run_cli(*args, "--repair")
    assert res.returncode == 0 and history(state)[0]["outcome"] == "repaired", res.stderr
    for kept in ("e2", "e3"):
        assert run_cli("verify", dest / kept, "--key", key).returncode == 0, kept
    status = read_status(dest)
    assert status is not None and not status.damaged


def test_repair_on_an_unchanged_upstream_repairs_in_place(
    tmp_path: Path, keydir: Path, signing_key: SigningKey
) -> None:
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    args = sync_args(str(up), dest, "concelier", key, state)
    e1 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-1")], "other": [advisory("CVE-9")]}, "e1")
    assert run_cli(*args).returncode == 0
    damaged = dest / "e1" / PRIMARY
    st = damaged.stat()
    flip(damaged, 40)
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))  # nothing but the bytes tells
    assert run_cli("verify", dest, "--key", key).returncode == 11
    assert history(state)[0]["outcome"] == "published"
    res = run_cli(*args)
    assert res.returncode == 0 and history(state)[0]["outcome"] == "unchanged"
    untouched = (dest / "e1" / OTHER).stat().st_ino
    res = run_cli(*args, "--repair")
    assert res.returncode == 0, res.stderr
    run = history(state)[0]
    assert run["outcome"] == "repaired" and run["filesFetched"] >= 1
    assert_serves(dest, e1, key)
    assert os.readlink(dest / "latest") == "e1"
    assert (dest / "e1" / OTHER).stat().st_ino == untouched, "a sound file is left in place"
    status = read_status(dest)
    assert status is not None and status.ok and not status.damaged
