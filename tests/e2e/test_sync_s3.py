"""``stella-mirror sync`` from a real S3 API endpoint on loopback (moto's server mode), uploads by the real AWS CLI.

First sync, no-op sync (at most 2 requests, counted in the endpoint's own request log) and an incremental
sync (two domains changed, one removed) — the served tree verifies after each and is byte-for-byte the
source export; unchanged artifacts are hard-linked from the served export, not downloaded again.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from s3proc import S3Endpoint
from stella_mirror.bundle.signing import SigningKey
from synctools import assert_serves, history, run_cli, sync_args
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e
BUCKET = "mirror-stellaops"
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) ')


def requests(log: Path) -> int:
    """Requests the endpoint has answered so far (its werkzeug access log, one line each)."""
    return len(_REQUEST.findall(log.read_text(errors="replace")))


def upload(s3: S3Endpoint, export_dir: Path, prefix: str) -> None:
    """Make the bucket's prefix hold exactly ``export_dir`` (S3 has no symlinks: plain objects).

    Emptied and copied afresh: ``aws s3 sync`` would skip a changed index of the same size whose local mtime
    is older than the object's upload time.
    """
    s3.aws("s3", "rm", f"s3://{BUCKET}/{prefix}", "--recursive", "--only-show-errors")
    s3.aws("s3", "cp", export_dir, f"s3://{BUCKET}/{prefix}", "--recursive", "--only-show-errors")


@pytest.mark.parametrize("kind", ["concelier", "excititor"])
def test_s3_first_noop_incremental(
    kind: str, tmp_path: Path, keydir: Path, signing_key: SigningKey, s3_endpoint: S3Endpoint
) -> None:
    s3_endpoint.aws("s3", "mb", f"s3://{BUCKET}")
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    key = keydir / "mirror-key.pub"
    env = s3_endpoint.env()
    prefix = f"{kind}/latest"
    args = sync_args(f"s3://{BUCKET}/{prefix}", dest, kind, key, state)
    if kind == "concelier":
        e1 = publish_concelier(src, signing_key, {d: [advisory(f"CVE-{d}-1")] for d in "abcd"}, "e1")
        e2 = publish_concelier(src, signing_key, {"a": [advisory("CVE-a-2")], "b": [advisory("CVE-b-2")],
                                                  "c": [advisory("CVE-c-1")]}, "e2")
    else:
        first = {d: {"k1": [{"d": d, "v": 1}], "k2": [{"d": d, "w": 1}]} for d in ("a", "b", "c", "d")}
        e1 = publish_excititor(src, signing_key, first, "e1")
        second = {"a": {"k1": [{"d": "a", "v": 2}], "k2": first["a"]["k2"]}, "b": {"k1": [{"d": "b", "v": 2}]},
                  "c": first["c"]}
        e2 = publish_excititor(src, signing_key, second, "e2")
    log = tmp_path / "moto.log"

    upload(s3_endpoint, e1, prefix)
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e1, key)

    before = requests(log)
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr
    assert requests(log) - before <= 2, "a no-op sync costs at most 2 requests"
    assert_serves(dest, e1, key)

    upload(s3_endpoint, e2, prefix)
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e2, key)
    assert not (dest / "e2" / "mirror" / "d").exists(), "the removed domain is gone from the new export"
    assert (dest / "e1").is_dir(), "the previous export stays for @e1-pinned requests"

    runs = history(state)
    assert [r["outcome"] for r in runs[:3]] == ["published", "unchanged", "published"]
    assert runs[0]["exportId"] == "e2" and runs[0]["sequence"] == 2 and runs[0]["source"] == f"s3://{BUCKET}/{prefix}"
    if kind == "excititor":
        # a/k2 and c/k1, c/k2 are unchanged: linked from the served export, not downloaded again.
        assert runs[0]["filesReused"] >= 3
        for rel in ("mirror/c/exports/k1/k1.json", "mirror/a/exports/k2/k2.json"):
            assert (dest / "e2" / rel).stat().st_ino == (dest / "e1" / rel).stat().st_ino
    shutil.rmtree(src)
