"""The delta rebuild over S3 ``GetObject Range`` against a real moto server: only the missing ranges are read,
the rebuilt bundle has the signed digest, and tampered object bytes are refused without touching the target."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from s3proc import S3Endpoint
from stella_mirror.bundle import chunks
from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.errors import DigestError
from stella_mirror.transfer import delta
from stella_mirror.transfer.readers import s3_range_reader
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e


def _advisories(n: int, tag: str) -> list[dict[str, object]]:
    out = []
    for i in range(n):
        a = advisory(f"CVE-2024-{i:05d}", package=f"pkg{i % 89}")
        a["description"] = f"description {i} " + "x" * (i % 300)
        if i in (40, 1900):
            a["summary"] = tag
        out.append(a)
    return out


def test_s3_range_rebuild(tmp_path: Path, s3_endpoint: S3Endpoint) -> None:
    key = generate_keypair(tmp_path / "keys")
    root = tmp_path / "concelier"
    e1 = publish_concelier(root, key, {"primary": _advisories(2500, "one")}, "e1", keep=5)
    e2 = publish_concelier(root, key, {"primary": _advisories(2500, "two")}, "e2", keep=5)
    new = e2 / "mirror" / "primary" / "bundle.json"
    manifest = json.loads((e2 / "mirror" / "primary" / "manifest.json").read_bytes())
    digest, size = manifest["bundle"]["digest"], manifest["bundle"]["sizeBytes"]
    table = chunks.decode(manifest["bundleChunks"], size, "bundle.json")

    env = s3_endpoint.env()
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="mirror")
    s3.put_object(Bucket="mirror", Key="concelier/e2/mirror/primary/bundle.json", Body=new.read_bytes())
    read = s3_range_reader(s3, "mirror", "concelier/e2/mirror/primary/bundle.json")

    target = tmp_path / "rebuilt.json"
    with delta.mapped([e1 / "mirror" / "primary" / "bundle.json"]) as views:
        stats = delta.rebuild(target, digest, table, views, read, "bundle.json")
    assert target.read_bytes() == new.read_bytes()
    assert 1 <= stats.requests <= 6
    assert stats.fetched_bytes < 0.05 * size, (stats, size)
    assert stats.fetched_bytes + stats.reused_bytes == size

    # Tampered object bytes inside a range the client needs: refused, the target left as it was.
    body = bytearray(new.read_bytes())
    body[body.index(b'"two"') + 1] ^= 1
    s3.put_object(Bucket="mirror", Key="concelier/e2/mirror/primary/bundle.json", Body=bytes(body))
    target.write_bytes(b"previous")
    with (
        delta.mapped([e1 / "mirror" / "primary" / "bundle.json"]) as views,
        pytest.raises(DigestError, match="does not match the chunk table"),
    ):
        delta.rebuild(target, digest, table, views, read, "bundle.json")
    assert target.read_bytes() == b"previous"
