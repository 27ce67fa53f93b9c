"""``stella-mirror publish --to file://DIR`` and ``--to rsync://…`` (a real, writable rsync daemon), then ``sync``
and ``verify`` read what was published: an export root with ``<exportId>/`` directories and ``latest``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from publishtools import exports, sha
from rsyncproc import rsync_daemon
from stella_mirror.bundle.signing import SigningKey
from synctools import assert_serves, files, run_cli, sync_args
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e


@contextmanager
def target(how: str, tmp: Path, kind: str) -> Iterator[tuple[str, Path]]:
    """(the --to URL, the directory it writes on this host)."""
    module = tmp / "module"
    root = module / kind
    module.mkdir()
    if how == "file":
        yield f"file://{root}", root
        return
    with rsync_daemon(tmp / "rsyncd", module, writable=True) as daemon:
        yield f"{daemon.url}/{kind}", root


def publish(export: Path, to: str, key: Path, *extra: str) -> dict[str, object]:
    res = run_cli("publish", export, "--to", to, "--key", key, "--json", *extra)
    assert res.returncode == 0, res.stderr
    out: dict[str, object] = orjson.loads(res.stdout)
    return out


@pytest.mark.parametrize("kind", ["concelier", "excititor"])
@pytest.mark.parametrize("how", ["file", "rsync"])
def test_publish_then_sync(how: str, kind: str, tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    pub = keydir / "mirror-key.pub"
    e1, e2, e3 = exports(kind, tmp_path / "src", signing_key)
    dest, state = tmp_path / "dest", tmp_path / "state"
    with target(how, tmp_path, kind) as (to, root):
        out = publish(e1, to, pub)
        assert out["state"] == "published" and out["filesUploaded"] == len(files(e1))
        assert os.readlink(root / "latest") == "e1" and files(root / "e1") == files(e1)
        assert run_cli("verify", root, "--key", pub).returncode == 0
        sync = sync_args(to, dest, kind, pub, state)
        res = run_cli(*sync)
        assert res.returncode == 0, res.stderr
        assert_serves(dest, e1, pub)

        # e2: what the target already holds is linked, not sent again; the rest is sent
        out = publish(e2, to, pub, "--keep", "2")
        held = files(e1)
        if how == "file":  # any kept file with the same SHA-256
            sent = {rel for rel, data in files(e2).items() if sha(data) not in {sha(d) for d in held.values()}}
        else:  # rsync: the active export's file at the same path, compared by rsync's checksum
            sent = {rel for rel, data in files(e2).items() if held.get(rel) != data}
        assert out["filesUploaded"] == len(sent)
        if kind == "excititor":  # its artifacts hold only records: the unchanged ones keep their bytes
            assert "mirror/c/exports/k1/k1.json" not in sent and "mirror/a/exports/k1/k1.json" in sent
        for rel, data in files(e2).items():
            if held.get(rel) == data:
                assert os.path.samefile(root / "e1" / rel, root / "e2" / rel), f"{rel} is a hard link"
        assert os.readlink(root / "latest") == "e2" and files(root / "e2") == files(e2)
        res = run_cli(*sync)
        assert res.returncode == 0, res.stderr
        assert_serves(dest, e2, pub)

        # the same export again: nothing sent, nothing changes
        out = publish(e2, to, pub, "--keep", "2")
        assert out["state"] == "current" and out["filesUploaded"] == 0

        # e3 with --keep 2: e1 is removed once e3 is active
        out = publish(e3, to, pub, "--keep", "2")
        assert out["exportsRemoved"] == ["e1"]
        assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["e2", "e3", "latest"]
        assert run_cli("verify", root, "--key", pub).returncode == 0
        res = run_cli(*sync)
        assert res.returncode == 0, res.stderr
        assert_serves(dest, e3, pub)

        # an older export over a newer one: rollback, refused, nothing changes
        res = run_cli("publish", e2, "--to", to, "--key", pub)
        assert res.returncode == 13, res.stderr
        assert os.readlink(root / "latest") == "e3"


@pytest.mark.parametrize("how", ["file", "rsync"])
def test_tampered_export_refused(how: str, tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    pub = keydir / "mirror-key.pub"
    e1 = publish_concelier(tmp_path / "src", signing_key, {"a": [advisory("CVE-a-1")]}, "e1")
    with target(how, tmp_path, "concelier") as (to, root):
        publish(e1, to, pub)
        before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        e2 = publish_concelier(tmp_path / "src", signing_key, {"a": [advisory("CVE-a-2")]}, "e2")
        (e2 / "mirror/a/manifest.json").write_bytes((e1 / "mirror/a/manifest.json").read_bytes())
        res = run_cli("publish", e2, "--to", to, "--key", pub)
        assert res.returncode in (10, 11, 14), res.stderr
        assert "mirror/a/manifest.json" in res.stderr or "mirror/index.json" in res.stderr
        assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
        assert os.readlink(root / "latest") == "e1"
