"""`stella-mirror verify https://…/concelier/exports` against a real `serve`: what the caller is given is
downloaded (each file capped at its signed size) and verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from clitools import cli
from serverproc import start_server
from stella_mirror.bundle.signing import SigningKey
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e


def _verify(root: Path, work: Path, key: Path) -> tuple[int, str]:
    sp = start_server(work, env={
        "CONCELIER__MIRROR__EXPORTROOT": str(root),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "EXCITITOR__MIRROR__ENABLED": "false",
    }, ready_path="/readyz")
    try:
        res = cli("verify", f"{sp.base}/concelier/exports", "--key", key)
    finally:
        sp.stop()
    return res.returncode, res.stdout + res.stderr


def test_verify_url_passes_then_refuses_a_file_larger_than_signed(tmp_path: Path, keydir: Path,
                                                                   signing_key: SigningKey) -> None:
    root = tmp_path / "concelier"
    export = publish_concelier(root, signing_key, {"primary": [advisory("CVE-2024-1")],
                                                   "community": [advisory("CVE-2024-2")]}, "e1")
    key = keydir / "mirror-key.pub"
    code, out = _verify(root, tmp_path / "srv1", key)
    assert code == 0, out
    assert "2 domain(s) [community, primary]" in out, out
    # The mirror now serves more bytes than the signed index gives: the download stops at the signed size.
    with (export / "mirror" / "community" / "bundle.json").open("ab") as fh:
        fh.write(b" " * 4096)
    code, out = _verify(root, tmp_path / "srv2", key)
    assert code == 11, out
    assert "is larger than" in out and "bundle.json" in out
