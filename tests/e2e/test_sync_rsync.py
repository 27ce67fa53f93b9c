"""``stella-mirror sync`` from a real ``rsync --daemon`` on loopback: first sync, no-op (one listing connection),
incremental (two domains changed, one removed); the served tree verifies after each and is byte-for-byte the
source export. The module serves the publisher's export root: its ``latest`` is read from rsync's listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsyncproc import rsync_daemon
from stella_mirror.bundle.signing import SigningKey
from synctools import assert_serves, history, run_cli, sync_args
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["concelier", "excititor"])
def test_rsync_first_noop_incremental(kind: str, tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    module, dest, state = tmp_path / "module", tmp_path / "dest", tmp_path / "state"
    src = module / kind
    key = keydir / "mirror-key.pub"
    password = tmp_path / "rsync-password"
    password.write_text("rsync-s3cret\n")
    password.chmod(0o600)
    with rsync_daemon(tmp_path / "rsyncd", module, user="mirror", password="rsync-s3cret") as daemon:
        args = sync_args(f"{daemon.url}/{kind}", dest, kind, key, state, "--username", "mirror",
                         "--password-file", password)
        if kind == "concelier":
            e1 = publish_concelier(src, signing_key, {d: [advisory(f"CVE-{d}-1")] for d in "abc"}, "e1")
        else:
            first = {d: {"k1": [{"d": d}], "k2": [{"d": d, "w": 1}]} for d in "abc"}
            e1 = publish_excititor(src, signing_key, first, "e1")
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr
        assert_serves(dest, e1, key)

        before = daemon.connections()
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr
        assert daemon.connections() - before <= 2, "a no-op sync costs at most 2 connections"
        assert history(state)[0]["outcome"] == "unchanged"

        if kind == "concelier":
            e2 = publish_concelier(src, signing_key, {"a": [advisory("CVE-a-2")], "b": [advisory("CVE-b-2")]}, "e2")
        else:
            second = {"a": {"k1": [{"d": "a", "v": 2}], "k2": first["a"]["k2"]}, "b": {"k1": [{"d": "b", "v": 2}]}}
            e2 = publish_excititor(src, signing_key, second, "e2")
        res = run_cli(*args)
        assert res.returncode == 0, res.stderr
        assert_serves(dest, e2, key)
        assert not (dest / "e2" / "mirror" / "c").exists()
        run = history(state)[0]
        assert run["outcome"] == "published" and run["exportId"] == "e2"
        if kind == "excititor":
            assert run["filesReused"] == 1  # a/k2 is unchanged: linked from e1, not transferred

        wrong = tmp_path / "wrong-password"
        wrong.write_text("nope\n")
        wrong.chmod(0o600)
        res = run_cli(*sync_args(f"{daemon.url}/{kind}", tmp_path / "d2", kind, key, state, "--username", "mirror",
                                 "--password-file", wrong))
        assert res.returncode == 4 and "auth failed" in res.stderr
