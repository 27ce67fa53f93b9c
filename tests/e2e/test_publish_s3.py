"""``stella-mirror publish --to s3://…`` against a real S3 API endpoint (moto's server mode), then ``sync`` from it.

Requests are counted at the endpoint by a real nginx in front of it (``s3count``): which keys received bytes,
which were server-side copies, and in which order everything happened.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from publishtools import exports, sha
from s3count import CountedS3, counted
from s3proc import S3Endpoint
from stella_mirror.bundle.keyfiles import load_trusted_keys
from stella_mirror.bundle.layout import listed_files
from stella_mirror.bundle.signing import SigningKey, verify_detached_jws
from stella_mirror.errors import SignatureError
from synctools import assert_serves, files, run_cli, sync_args
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e
BUCKET = "mirror-stellaops"


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, tmp_path: Path) -> Iterator[CountedS3]:
    s3_endpoint.aws("s3", "mb", f"s3://{BUCKET}")
    with counted(s3_endpoint, tmp_path / "proxy") as proxy:
        yield proxy


def client(s3: CountedS3) -> Any:
    from botocore.session import get_session

    env = s3.endpoint.env()
    return get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=s3.endpoint.url,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def objects(s3: CountedS3, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (relative key → bytes)."""
    c = client(s3)
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :]] = c.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return out


def publish(s3: CountedS3, root: Path, to: str, key: Path, *extra: str | Path) -> Any:
    return run_cli(
        "publish",
        root,
        "--to",
        to,
        "--key",
        key,
        "--endpoint-url",
        s3.endpoint.url,
        "--json",
        *extra,
        env=s3.endpoint.env(),
    )


@pytest.mark.parametrize("kind", ["concelier", "excititor"])
def test_publish_then_sync_incremental_keep(
    kind: str, tmp_path: Path, keydir: Path, signing_key: SigningKey, s3: CountedS3
) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    pub = keydir / "mirror-key.pub"
    e1, e2, e3 = exports(kind, src, signing_key)
    to = f"s3://{BUCKET}/{kind}"
    sync = sync_args(f"s3://{BUCKET}/{kind}/latest", dest, kind, pub, state, "--endpoint-url", s3.endpoint.url)
    # The export root's latest is e3: publish each export directory in turn.
    res = publish(s3, e1, to, pub, "--keep", "2")
    assert res.returncode == 0, res.stderr
    outcome = orjson.loads(res.stdout)
    assert outcome["state"] == "published" and outcome["syncSource"] == f"s3://{BUCKET}/{kind}/latest"
    assert objects(s3, f"{kind}/latest/") == files(e1) == objects(s3, f"{kind}/e1/")
    res = run_cli(*sync, env=s3.endpoint.env())
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e1, pub)

    # e2: only files whose bytes the bucket does not hold yet are sent, compared by SHA-256 (the same-size
    # edit of domain a is sent; an unchanged Excititor artifact is not).
    before = len(s3.requests())
    held = {sha(d) for d in files(e1).values()}
    res = publish(s3, e2, to, pub, "--keep", "2")
    assert res.returncode == 0, res.stderr
    new = {rel for rel, data in files(e2).items() if sha(data) not in held}
    sent = s3.uploads(before)
    assert {k.removeprefix(f"/{BUCKET}/{kind}/e2/") for k, _ in sent} == new
    assert sum(n for _, n in sent) == sum(len(files(e2)[r]) for r in new)
    assert all(k.startswith(f"/{BUCKET}/{kind}/e2/") for k, _ in sent), "latest/ is switched by copies only"
    assert orjson.loads(res.stdout)["bytesUploaded"] == sum(n for _, n in sent)
    if kind == "excititor":
        assert "mirror/c/exports/k1/k1.json" not in new and "mirror/a/exports/k1/k1.json" in new
        assert len(files(e1)["mirror/a/exports/k1/k1.json"]) == len(files(e2)["mirror/a/exports/k1/k1.json"])
    assert objects(s3, f"{kind}/latest/") == files(e2), "latest/ is exactly e2: domain d's files are gone"
    _assert_order(s3, before, kind)
    res = run_cli(*sync, env=s3.endpoint.env())
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e2, pub)

    # a publish of the served export again changes nothing and sends nothing
    before = len(s3.requests())
    res = publish(s3, e2, to, pub, "--keep", "2")
    assert res.returncode == 0, res.stderr
    assert orjson.loads(res.stdout)["state"] == "current"
    assert not s3.uploads(before) and not s3.copies(before)

    # e3 with --keep 2: e1 goes, after e3 is in place; e2 stays
    res = publish(s3, e3, to, pub, "--keep", "2")
    assert res.returncode == 0, res.stderr
    assert orjson.loads(res.stdout)["exportsRemoved"] == ["e1"]
    assert not objects(s3, f"{kind}/e1/") and objects(s3, f"{kind}/e2/") == files(e2)
    assert objects(s3, f"{kind}/latest/") == files(e3)
    res = run_cli(*sync, env=s3.endpoint.env())
    assert res.returncode == 0, res.stderr
    assert_serves(dest, e3, pub)

    # publishing an older export over a newer one is refused: rollback, nothing written
    before = len(s3.requests())
    res = publish(s3, e2, to, pub)
    assert res.returncode == 13, res.stderr
    assert not s3.uploads(before) and not s3.copies(before)


def _phase(rel: str, kind: str) -> int:
    name = rel.removesuffix(".jws").removesuffix(".sig")
    if kind == "concelier":
        if name == "mirror/index.json":
            return 3
        if name.endswith("/index.json"):
            return 2
        return 1 if name.endswith("/manifest.json") else 0
    return 3 if name.endswith("/index.json") and name.count("/") == 2 else 0


def _assert_order(s3: CountedS3, since: int, kind: str) -> None:
    """In the endpoint's log of one publish: latest/ written in phase order, each index after its signatures,
    deletions (of latest/'s stale files and of old exports) only after the last index."""
    reqs = s3.requests()[since:]
    live = f"/{BUCKET}/{kind}/latest/"
    writes = [
        (i, r["uri"].removeprefix(live))
        for i, r in enumerate(reqs)
        if r["method"] == "PUT" and r["uri"].startswith(live)
    ]
    assert writes, "latest/ was written"
    phases = [_phase(rel, kind) for _, rel in writes]
    assert phases == sorted(phases), phases
    at = {rel: i for i, rel in writes}
    for rel, i in at.items():
        for suffix in (".jws", ".sig"):
            if rel + suffix in at:
                assert at[rel + suffix] < i, f"{rel}{suffix} after {rel}"
    last_index = max(i for i, rel in writes if _phase(rel, kind) == 3)
    deletes = [i for i, r in enumerate(reqs) if r["method"] in ("DELETE", "POST")]
    assert all(i > last_index for i in deletes), "nothing is deleted before the new index is in place"


def test_reader_never_sees_half_published(tmp_path: Path, keydir: Path, signing_key: SigningKey, s3: CountedS3) -> None:
    """A reader polls latest/mirror/index.json during a publish (as a mirror's sync reads: the index, then its
    signature, then what it names). Every index it sees names only files that are there; once it sees the new
    index, its signature and every file it names are the new export's. A reader still holding the old index may
    meet the new export's .jws (the documented window of a few requests) — never anything else."""
    src = tmp_path / "src"
    pub = keydir / "mirror-key.pub"
    keys = load_trusted_keys([pub])
    domains = [f"d{i:02d}" for i in range(12)]
    e1 = publish_concelier(src, signing_key, {d: [advisory(f"CVE-{d}-1")] for d in domains}, "e1")
    e2 = publish_concelier(
        src, signing_key, {d: [advisory(f"CVE-{d}-2"), advisory(f"CVE-{d}-3")] for d in domains[:-1]}, "e2"
    )
    to = f"s3://{BUCKET}/concelier"
    assert publish(s3, e1, to, pub).returncode == 0
    new_index = (e2 / "mirror/index.json").read_bytes()
    c = client(s3)
    live = "concelier/latest/"
    stop = threading.Event()
    seen: dict[str, int] = {"e1": 0, "e2": 0}
    problems: list[str] = []
    windows: list[str] = []

    def get(rel: str) -> bytes | None:
        try:
            return bytes(c.get_object(Bucket=BUCKET, Key=live + rel)["Body"].read())
        except c.exceptions.NoSuchKey:
            return None

    def read_once() -> None:
        index = get("mirror/index.json")
        if index is None:
            problems.append("no index")
            return
        doc = orjson.loads(index)
        export = doc["exportId"]
        seen[export] += 1
        jws = get("mirror/index.json.jws")
        try:
            verify_detached_jws(jws or b"", index, keys)
        except SignatureError:
            if export == "e2":
                problems.append("the new index with a signature that does not match it")
            else:
                verify_detached_jws(jws or b"", new_index, keys)  # only the next export's .jws, never else
                windows.append("old index, new .jws")
        for item in listed_files({"mirror/index.json": doc}):
            data = get(item.rel)
            if data is None and not item.optional:
                if get("mirror/index.json") == index:
                    problems.append(f"{export} names {item.rel}, which is not there")
                return
            if export == "e2" and data is not None and "sha256:" + sha(data) != item.digest:
                problems.append(f"the new index names {item.rel} with other bytes")

    def reader() -> None:
        while not stop.is_set():
            try:
                read_once()
            except Exception as exc:  # a reader failure is a test failure, reported below
                problems.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        res = publish(s3, e2, to, pub)
    finally:
        for _ in range(100):  # let the reader see the new state a few times
            if seen["e2"] >= 3:
                break
            threading.Event().wait(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert res.returncode == 0, res.stderr
    assert not problems, problems[:5]
    assert seen["e1"] > 0 and seen["e2"] > 0, seen


@pytest.mark.parametrize("tamper", ["digest", "signature", "key"])
def test_tampered_export_refused_before_any_upload(
    tamper: str, tmp_path: Path, keydir: Path, signing_key: SigningKey, s3: CountedS3
) -> None:
    src = tmp_path / "src"
    pub = keydir / "mirror-key.pub"
    e1 = publish_concelier(src, signing_key, {"a": [advisory("CVE-a-1")]}, "e1")
    assert publish(s3, e1, f"s3://{BUCKET}/concelier", pub).returncode == 0
    e2 = publish_concelier(src, signing_key, {"a": [advisory("CVE-a-2")]}, "e2")
    if tamper == "digest":
        bundle = e2 / "mirror/a/bundle.json"
        data = bytearray(bundle.read_bytes())
        data[data.index(b"CVE-a-2")] = ord("X")
        bundle.write_bytes(bytes(data))
        code = 11
    elif tamper == "signature":
        (e2 / "mirror/index.json.jws").write_bytes((e1 / "mirror/index.json.jws").read_bytes())
        code = 10
    else:
        from stella_mirror.bundle.signing import generate, public_pem

        other = tmp_path / "other.pub"
        other.write_bytes(public_pem(generate("ES256").public))
        pub = other
        code = 10
    before = objects(s3, "")
    count = len(s3.requests())
    res = publish(s3, e2, f"s3://{BUCKET}/concelier", pub)
    assert res.returncode == code, res.stderr
    assert f"[{ {11: 'digest', 10: 'signature'}[code] }]" in res.stderr
    assert objects(s3, "") == before, "the bucket is unchanged"
    assert not [r for r in s3.requests()[count:] if r["method"] in ("PUT", "POST", "DELETE")]


def test_credentials_from_files(tmp_path: Path, keydir: Path, signing_key: SigningKey, s3: CountedS3) -> None:
    """Without the AWS chain's credentials the publish stops at once (exit 3, nothing written); with
    --access-key-id-file/--secret-access-key-file it publishes; the secret is never printed."""
    pub = keydir / "mirror-key.pub"
    e1 = publish_concelier(tmp_path / "src", signing_key, {"a": [advisory("CVE-a-1")]}, "e1")
    env = {k: v for k, v in s3.endpoint.env().items() if not k.startswith("AWS_ACCESS") and "SECRET" not in k}
    bare = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    args = ["publish", e1, "--to", f"s3://{BUCKET}/concelier", "--key", pub, "--endpoint-url", s3.endpoint.url]
    res = run_cli(*args, env={**env, **bare, "AWS_EC2_METADATA_DISABLED": "true"})
    assert res.returncode == 3, res.stderr
    assert "no usable AWS credentials" in res.stderr
    assert not objects(s3, "concelier/")
    (tmp_path / "id").write_text("stella-test\n")
    (tmp_path / "secret").write_text("stella-test-secret-in-a-file\n")
    res = run_cli(
        *args,
        "--access-key-id-file",
        tmp_path / "id",
        "--secret-access-key-file",
        tmp_path / "secret",
        env={**env, **bare, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert res.returncode == 0, res.stderr
    assert "stella-test-secret-in-a-file" not in res.stdout + res.stderr
    assert objects(s3, "concelier/latest/") == files(e1)


def test_size_only_upload_breaks_mirrors_publish_repairs(
    tmp_path: Path, keydir: Path, signing_key: SigningKey, s3: CountedS3
) -> None:
    """The runbook's ``aws s3 sync --delete --size-only`` on the publisher side leaves every file of the previous
    export that has the new one's size (re-signed ``.jws``, same-size edits, an index whose sequence kept its
    length): the new export never reaches the mirrors. ``publish`` over the same prefix replaces every object it
    cannot show identical by SHA-256 (objects without its metadata included)."""
    pub = keydir / "mirror-key.pub"
    x1, x2, _ = exports("excititor", tmp_path / "src", signing_key)
    live = f"s3://{BUCKET}/excititor/latest"
    s3.endpoint.aws("s3", "sync", x1, live, "--delete", "--size-only", "--only-show-errors")
    s3.endpoint.aws("s3", "sync", x2, live, "--delete", "--size-only", "--only-show-errors")
    assert objects(s3, "excititor/latest/") != files(x2), "size-only kept objects of x1"
    dest, state = tmp_path / "dest", tmp_path / "state"
    sync = sync_args(live, dest, "excititor", pub, state, "--endpoint-url", s3.endpoint.url)
    res = run_cli(*sync, env=s3.endpoint.env())
    # Here every changed file kept its size: the bucket still holds x1 (less the dropped domain), which a mirror
    # syncs as x1 — or refuses, when a signature or digest of x2 slipped in. Either way x2 never arrives.
    assert res.returncode in (0, 10, 11), res.stderr
    assert not (dest / "latest").exists() or os.readlink(dest / "latest") == "e1"
    res = publish(s3, x2, f"s3://{BUCKET}/excititor", pub)
    assert res.returncode == 0, res.stderr
    assert objects(s3, "excititor/latest/") == files(x2)
    res = run_cli(*sync, env=s3.endpoint.env())
    assert res.returncode == 0, res.stderr
    assert_serves(dest, x2, pub)


def test_excititor_reader_during_publish(tmp_path: Path, keydir: Path, signing_key: SigningKey, s3: CountedS3) -> None:
    """Excititor has one index per domain. A reader polling latest/ during a publish (a LIST, every domain index,
    then what they name) that finds every index of the new export finds their signatures and every file they
    name with the new bytes; indexes of two exports (the switch in progress) are what the sync refuses as
    disagreeing — never an index naming a file that is not there. (A dropped domain's index stays until the new
    indexes are in place, so a reader sees two exports until then: no domain is dropped here.)"""
    pub = keydir / "mirror-key.pub"
    keys = load_trusted_keys([pub])
    domains = [f"d{i:02d}" for i in range(10)]
    x1 = publish_excititor(
        tmp_path / "src", signing_key, {d: {f"k{k}": [{"d": d, "v": 1}] for k in range(3)} for d in domains}, "e1"
    )
    x2 = publish_excititor(
        tmp_path / "src", signing_key, {d: {f"k{k}": [{"d": d, "v": 2}] for k in range(3)} for d in domains}, "e2"
    )
    to = f"s3://{BUCKET}/excititor"
    assert publish(s3, x1, to, pub).returncode == 0
    c = client(s3)
    live = "excititor/latest/"
    stop = threading.Event()
    seen = {"x1": 0, "x2": 0, "mixed": 0}
    problems: list[str] = []

    def get(rel: str) -> bytes | None:
        try:
            return bytes(c.get_object(Bucket=BUCKET, Key=live + rel)["Body"].read())
        except c.exceptions.NoSuchKey:
            return None

    def read_once() -> None:
        indexes = {f"mirror/{d}/index.json": get(f"mirror/{d}/index.json") for d in domains}
        docs = {rel: orjson.loads(data) for rel, data in indexes.items() if data is not None}
        exports_seen = {doc["exportId"] for doc in docs.values()}
        if len(exports_seen) != 1:
            seen["mixed"] += 1
            return
        export = exports_seen.pop()
        seen["x1" if export == "e1" else "x2"] += 1
        for rel, data in indexes.items():
            if data is None:
                continue
            if export == "e2":
                try:
                    verify_detached_jws(get(rel + ".jws") or b"", data, keys)
                except SignatureError:
                    problems.append(f"{rel} of the new export with a signature that does not match it")
            for item in listed_files({rel: docs[rel]}):
                body = get(item.rel)
                if body is None and get(rel) == data:
                    problems.append(f"{rel} names {item.rel}, which is not there")
                elif export == "e2" and body is not None and "sha256:" + sha(body) != item.digest:
                    problems.append(f"the new {rel} names {item.rel} with other bytes")

    def reader() -> None:
        while not stop.is_set():
            try:
                read_once()
            except Exception as exc:  # a reader failure is a test failure, reported below
                problems.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        res = publish(s3, x2, to, pub)
    finally:
        for _ in range(100):
            if seen["x2"] >= 3:
                break
            threading.Event().wait(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert res.returncode == 0, res.stderr
    assert not problems, problems[:5]
    assert seen["x1"] > 0 and seen["x2"] > 0, seen
