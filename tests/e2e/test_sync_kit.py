"""Offline kits: ``offline-kit create`` → ``sync --source KIT.tar`` on another root → ``verify`` passes; a kit with
one flipped byte is refused and changes nothing."""

from __future__ import annotations

import tarfile
from pathlib import Path

import orjson
import pytest

from clitools import flip
from stella_mirror.bundle.signing import SigningKey
from synctools import assert_serves, history, run_cli, sync_args
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e


def member_offset(kit: Path, name: str) -> int:
    with tarfile.open(kit) as tar:
        return tar.getmember(name).offset_data


def test_kit_create_import_and_a_flipped_byte(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    key = keydir / "mirror-key.pub"
    c1 = publish_concelier(tmp_path / "pub-c", signing_key, {"primary": [advisory("CVE-1")]}, "c1")
    x1 = publish_excititor(tmp_path / "pub-x", signing_key, {"primary": {"k1": [{"v": 1}]}}, "x1")
    state = tmp_path / "state"
    for kind, root, export in (("concelier", tmp_path / "pub-c", c1), ("excititor", tmp_path / "pub-x", x1)):
        kit = tmp_path / f"{kind}.tar"
        res = run_cli("offline-kit", "create", "--from", root, "--out", kit, "--key", key)
        assert res.returncode == 0, res.stderr
        with tarfile.open(kit) as tar:
            names = tar.getnames()
            manifest = orjson.loads(tar.extractfile("kit.json").read())  # type: ignore[union-attr]
            assert "keys/jwks.json" in names and any(n.startswith("export/mirror/") for n in names)
        assert manifest["kind"] == kind and manifest["exportId"] == export.name and manifest["sequence"] == 1
        dest = tmp_path / f"air-gapped-{kind}"
        res = run_cli(*sync_args(str(kit), dest, kind, key, state))
        assert res.returncode == 0, res.stderr
        assert_serves(dest, export, key)
        assert history(state)[0]["outcome"] == "published"

    # A newer export in a kit with one flipped byte (inside the bundle) is refused; c1 stays served.
    c2 = publish_concelier(tmp_path / "pub-c", signing_key, {"primary": [advisory("CVE-2")]}, "c2")
    kit = tmp_path / "c2.tar"
    assert run_cli("offline-kit", "create", "--from", tmp_path / "pub-c", "--out", kit, "--key", key).returncode == 0
    flip(kit, member_offset(kit, "export/mirror/primary/bundle.json") + 40)
    dest = tmp_path / "air-gapped-concelier"
    res = run_cli(*sync_args(str(kit), dest, "concelier", key, state))
    assert res.returncode == 11, res.stderr
    assert "export/mirror/primary/bundle.json" in res.stderr
    assert_serves(dest, c1, key)
    assert history(state)[0]["outcome"] == "digest"
    assert c2.is_dir()

    # The wrong product, or no kit at all, are refused as well.
    res = run_cli(*sync_args(str(tmp_path / "excititor.tar"), tmp_path / "d3", "concelier", key, state))
    assert res.returncode == 14 and "excititor export, not concelier" in res.stderr


def test_kit_create_refuses_an_export_that_does_not_verify(tmp_path: Path, keydir: Path,
                                                           signing_key: SigningKey) -> None:
    c1 = publish_concelier(tmp_path / "pub", signing_key, {"primary": [advisory("CVE-1")]}, "c1")
    flip(c1 / "mirror" / "primary" / "bundle.json", 10)
    res = run_cli("offline-kit", "create", "--from", tmp_path / "pub", "--out", tmp_path / "k.tar", "--key",
                  keydir / "mirror-key.pub")
    assert res.returncode == 11 and not (tmp_path / "k.tar").exists()
