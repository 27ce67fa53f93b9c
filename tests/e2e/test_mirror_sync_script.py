"""deploy/systemd/mirror-sync.sh (runbook §4.1): bucket -> staging -> stella-mirror verify -> atomic switch.

The AWS CLI is replaced by a stand-in that maps ``s3://`` onto a local directory with rsync (no S3 here);
everything else — verification, the ``latest`` switch, rollback refusal, pruning — is the real script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stella_mirror.bundle.signing import SigningKey
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "mirror-sync.sh"

FAKE_AWS = """#!/usr/bin/env bash
# aws s3 sync s3://<path> <dir> --delete --size-only [...] against $FAKE_S3 (the test's bucket directory)
set -euo pipefail
[[ $1 == s3 && $2 == sync ]] || { echo "unexpected: $*" >&2; exit 2; }
[[ " $* " == *" --delete "* && " $* " == *" --size-only "* ]] || { echo "missing --delete/--size-only" >&2; exit 2; }
src="$FAKE_S3/${3#s3://}"
[[ -d $src ]] || { echo "no such prefix: $3" >&2; exit 1; }
mkdir -p "$4"
rsync -a --delete --size-only "$src/" "$4/"
"""


class Env:
    def __init__(self, tmp: Path, key_pub: Path) -> None:
        self.tmp = tmp
        self.bucket = tmp / "bucket"
        self.data = tmp / "data"
        self.staging = tmp / "staging"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        aws = bin_dir / "aws"
        aws.write_text(FAKE_AWS)
        cli = bin_dir / "stella-mirror"
        cli.write_text(f'#!/bin/sh\nexec {sys.executable} -c "from stella_mirror.cli.main import main; main()" "$@"\n')
        for exe in (aws, cli):
            exe.chmod(0o755)
        self.env = {**os.environ, "FAKE_S3": str(self.bucket), "MIRROR_SYNC_SOURCE": "s3://mirror-stellaops",
                    "AWS_CLI": str(aws), "STELLA_MIRROR": str(cli), "MIRROR_DATA_DIR": str(self.data),
                    "MIRROR_STAGING_DIR": str(self.staging), "MIRROR_VERIFY_KEYS": str(key_pub),
                    "MIRROR_KEEP": "2"}

    def upload(self, product: str, export_dir: Path) -> Path:
        """Make ``export_dir`` the bucket's <product>/latest prefix (S3 has no symlinks: a plain copy)."""
        prefix = self.bucket / "mirror-stellaops" / product / "latest"
        shutil.rmtree(prefix, ignore_errors=True)
        shutil.copytree(export_dir, prefix)
        return prefix

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT)], env=self.env, capture_output=True, text=True, timeout=120, check=False)

    def latest(self, product: str) -> str:
        return os.readlink(self.data / product / "latest")


def test_sync_verifies_before_switching(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    env = Env(tmp_path, keydir / "mirror-key.pub")
    src_c, src_x = tmp_path / "src-c", tmp_path / "src-x"
    env.upload("concelier", publish_concelier(src_c, signing_key, {"primary": [advisory("CVE-1")]}, "c1"))
    env.upload("excititor", publish_excititor(src_x, signing_key, {"primary": {"k1": [{"v": 1}]}}, "x1"))

    res = env.run()
    assert res.returncode == 0, res.stderr
    assert (env.latest("concelier"), env.latest("excititor")) == ("c1", "x1")
    for product in ("concelier", "excititor"):
        check = subprocess.run([env.env["STELLA_MIRROR"], "verify", str(env.data / product), "--key",
                                env.env["MIRROR_VERIFY_KEYS"]], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    assert (env.staging / "concelier.sequence").read_text().strip() == "1"

    # A tampered export of the same size (what --size-only lets through) is never served.
    c2 = publish_concelier(src_c, signing_key, {"primary": [advisory("CVE-1"), advisory("CVE-2")]}, "c2")
    bundle = env.upload("concelier", c2) / "mirror" / "primary" / "bundle.json"
    data = bundle.read_bytes()
    bundle.write_bytes(data.replace(b"CVE-2", b"CVE-3", 1))
    res = env.run()
    assert res.returncode == 1
    assert "concelier: staging tree does not verify; downloading it again in full" in res.stderr
    assert "concelier: staging tree failed verification" in res.stderr
    assert env.latest("concelier") == "c1" and env.latest("excititor") == "x1"

    # The genuine export is served although a size-only sync over the tampered staging copy misses the
    # fix (same sizes): the full re-download after the failed verification picks it up.
    env.upload("concelier", c2)
    res = env.run()
    assert res.returncode == 0, res.stderr
    assert env.latest("concelier") == "c2"
    assert (env.data / "concelier" / "c1").is_dir(), "the previous export stays for pinned readers"
    assert (env.staging / "concelier.sequence").read_text().strip() == "2"

    # Rolling the bucket back to an older sequence is refused.
    env.upload("concelier", src_c / "c1")
    res = env.run()
    assert res.returncode == 1
    assert env.latest("concelier") == "c2"

    # Pruning keeps MIRROR_KEEP=2 exports, always including the live one.
    env.upload("concelier", publish_concelier(src_c, signing_key, {"primary": [advisory("CVE-4")]}, "c3"))
    res = env.run()
    assert res.returncode == 0, res.stderr
    assert env.latest("concelier") == "c3"
    assert sorted(p.name for p in (env.data / "concelier").iterdir() if not p.name.startswith(".")) == [
        "c2", "c3", "latest"]
