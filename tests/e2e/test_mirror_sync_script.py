"""deploy/systemd/mirror-sync.sh (runbook §4.1): bucket -> staging -> stella-mirror verify -> atomic switch.

The bucket is a real S3 API endpoint on loopback (moto's server mode) and the script runs the real
``aws s3 sync --delete --size-only``; the tests upload exports with the real ``aws`` CLI too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from s3proc import S3Endpoint
from stella_mirror.bundle.signing import SigningKey
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "mirror-sync.sh"
BUCKET = "mirror-stellaops"


class Env:
    def __init__(self, tmp: Path, key_pub: Path, s3: S3Endpoint) -> None:
        self.tmp = tmp
        self.s3 = s3
        self.data = tmp / "data"
        self.staging = tmp / "staging"
        self.uploads = 0
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        cli = bin_dir / "stella-mirror"
        cli.write_text(f'#!/bin/sh\nexec {sys.executable} -c "from stella_mirror.cli.main import main; main()" "$@"\n')
        cli.chmod(0o755)
        aws = shutil.which("aws")
        assert aws is not None
        self.env = {**os.environ, **s3.env(), "MIRROR_SYNC_SOURCE": f"s3://{BUCKET}",
                    "AWS_CLI": aws, "STELLA_MIRROR": str(cli), "MIRROR_DATA_DIR": str(self.data),
                    "MIRROR_STAGING_DIR": str(self.staging), "MIRROR_VERIFY_KEYS": str(key_pub),
                    "MIRROR_KEEP": "2"}
        s3.aws("s3", "mb", f"s3://{BUCKET}")

    def upload(self, product: str, export_dir: Path, tamper: Callable[[Path], None] | None = None) -> None:
        """Make ``export_dir`` the bucket's <product>/latest prefix (S3 has no symlinks: plain objects).

        The prefix is emptied first and the files uploaded afresh, so the bucket holds exactly this
        export; ``tamper`` may change the local copy before it is uploaded.
        """
        self.uploads += 1
        copy = self.tmp / f"upload-{self.uploads}"
        shutil.copytree(export_dir, copy)
        if tamper is not None:
            tamper(copy)
        prefix = f"s3://{BUCKET}/{product}/latest"
        self.s3.aws("s3", "rm", prefix, "--recursive", "--only-show-errors")
        self.s3.aws("s3", "cp", copy, prefix, "--recursive", "--only-show-errors")

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT)], env=self.env, capture_output=True, text=True, timeout=120, check=False)

    def latest(self, product: str) -> str:
        return os.readlink(self.data / product / "latest")


def test_sync_verifies_before_switching(
    tmp_path: Path, keydir: Path, signing_key: SigningKey, s3_endpoint: S3Endpoint
) -> None:
    env = Env(tmp_path, keydir / "mirror-key.pub", s3_endpoint)
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

    def same_size_tamper(copy: Path) -> None:
        bundle = copy / "mirror" / "primary" / "bundle.json"
        bundle.write_bytes(bundle.read_bytes().replace(b"CVE-2", b"CVE-3", 1))

    env.upload("concelier", c2, same_size_tamper)
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
