"""Fast tests of the sync's pure parts: what an index lists, retries, token refresh, URLs, state, caps."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from stella_mirror.bundle.layout import Listed, export_identity, index_paths, listed_files
from stella_mirror.errors import DigestError, HTTPStatusError, MalformedBundleError, SourceError, UnreachableError
from stella_mirror.sync import retry
from stella_mirror.sync.config import SourceOptions, SyncJobConfig
from stella_mirror.sync.oauth import ClientCredentials
from stella_mirror.sync.sources import open_source, redact_url
from stella_mirror.sync.sources.file import FileSource
from stella_mirror.sync.sources.interface import Progress, Want, partial_name
from stella_mirror.sync.state import ProbeState, RunRecord, SyncState
from tokens import TokenIssuer
from tokenserver import token_endpoint


def _ref(path: str, size: int = 3) -> dict[str, object]:
    return {"path": path, "sizeBytes": size, "digest": "sha256:" + "a" * 64}


def test_listed_files_of_both_products() -> None:
    index = {"exportId": "e1", "domains": [{"domainId": "p", "manifest": _ref("mirror/p/manifest.json"),
                                            "bundle": _ref("mirror/p/bundle.json", 7)}]}
    own = b'{"domains":[{"bundle":{"digest":"sha256:' + b"a" * 64 + b'","path":"mirror/p/bundle.json","sizeBytes":7},'
    own += b'"domainId":"p","manifest":{"digest":"sha256:' + b"a" * 64 + b'","path":"mirror/p/manifest.json",'
    own += b'"sizeBytes":3}}],"exportId":"e1"}\n'
    assert list(listed_files({"mirror/index.json": index})) == [
        Listed("mirror/p/manifest.json", 3, "sha256:" + "a" * 64, False),
        Listed("mirror/p/bundle.json", 7, "sha256:" + "a" * 64, True),
        # The domain's own index: its bytes follow from the full index, so its size and digest are known.
        Listed("mirror/p/index.json", len(own), "sha256:" + hashlib.sha256(own).hexdigest(), True, optional=True),
    ]
    excititor = {"mirror/d/index.json": {"exports": [_ref("exports/k/k.json")]}}
    assert [f.rel for f in listed_files(excititor)] == ["mirror/d/exports/k/k.json"]


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs", "a/../../b", "a\x00b", "a//b", ""])
def test_listed_paths_never_leave_the_export(path: str) -> None:
    with pytest.raises(MalformedBundleError):
        list(listed_files({"mirror/d/index.json": {"exports": [_ref(path)]}}))


def test_listed_sizes_must_be_integers() -> None:
    with pytest.raises(MalformedBundleError):
        list(listed_files({"mirror/d/index.json": {"exports": [{**_ref("exports/k/x"), "sizeBytes": "3"}]}}))


def test_export_identity_must_agree() -> None:
    assert export_identity({"a": {"exportId": "e1", "sequence": 2}, "b": {"exportId": "e1", "sequence": 2}}) == (
        "e1", 2)
    with pytest.raises(MalformedBundleError, match="disagree"):
        export_identity({"a": {"exportId": "e1", "sequence": 2}, "b": {"exportId": "e2", "sequence": 2}})
    with pytest.raises(MalformedBundleError):
        export_identity({"a": {"exportId": "e1", "sequence": True}})


def test_index_paths_pick_the_product_indexes() -> None:
    names = ["mirror/index.json", "mirror/a/index.json", "mirror/a/exports/k/index.json", "mirror/.x/index.json"]
    assert index_paths("concelier", names) == ["mirror/index.json"]
    assert index_paths("excititor", names) == ["mirror/a/index.json"]


def test_retries_transient_errors_with_bounded_backoff() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise UnreachableError("down")
        return "ok"

    assert retry.with_retries(flaky, sleep=waits.append) == "ok"
    assert len(calls) == 3 and len(waits) == 2
    assert all(0 <= w <= retry.CAP_SECONDS for w in waits)

    def always() -> None:
        raise HTTPStatusError("u", 503)

    waits.clear()
    with pytest.raises(HTTPStatusError):
        retry.with_retries(always, sleep=waits.append)
    assert len(waits) == retry.ATTEMPTS - 1

    def fatal() -> None:
        raise SourceError("credentials refused")

    waits.clear()
    with pytest.raises(SourceError):
        retry.with_retries(fatal, sleep=waits.append)
    assert waits == []
    assert not retry.transient(HTTPStatusError("u", 404)) and retry.transient(HTTPStatusError("u", 429))
    assert all(0 <= retry.backoff(a) <= retry.CAP_SECONDS for a in range(10))


def test_tokens_are_cached_and_refreshed_before_expiry(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    now = [1000.0]
    with token_endpoint(TokenIssuer(), "cid", "s3cret", lifetime=100) as ep, httpx.Client() as client:
        creds = ClientCredentials(ep.url, "cid", secret, "concelier.mirror.read", client, clock=lambda: now[0])
        first = creds.token()
        now[0] += 75  # 80 % of the lifetime: still cached
        assert creds.token() == first and creds.grants == 1
        now[0] += 6  # past lifetime - lifetime/5: fetched again, before it expires
        creds.token()
        assert creds.grants == 2
        creds.token(force=True)
        assert creds.grants == 3
        secret.write_text("wrong\n")
        with pytest.raises(HTTPStatusError) as info:
            creds.token(force=True)
        assert info.value.status == 401 and "wrong" not in str(info.value)


def test_urls_are_recorded_without_credentials() -> None:
    assert redact_url("https://user@mirror.test:8443/base?sig=abc") == "https://mirror.test:8443/base"
    assert redact_url("s3://bucket/prefix") == "s3://bucket/prefix"
    assert redact_url("mirror@host:/srv/mirror") == "mirror@host:/srv/mirror"
    with pytest.raises(ValidationError, match="password inside"):
        SyncJobConfig(name="j", kind="concelier", source="https://u:p@h/", trust_keys=(Path("k"),))


def test_open_source_picks_the_module(tmp_path: Path) -> None:
    assert type(open_source(str(tmp_path), SourceOptions())).__name__ == "FileSource"
    (tmp_path / "kit.tar").write_bytes(b"")
    assert type(open_source(f"file://{tmp_path}/kit.tar", SourceOptions())).__name__ == "KitSource"
    assert type(open_source("rsync://h/m/p", SourceOptions())).__name__ == "RsyncSource"
    assert type(open_source("mirror@host:/srv", SourceOptions())).__name__ == "RsyncSource"
    assert type(open_source("https://h/", SourceOptions())).__name__ == "HTTPSource"


def test_state_records_runs_and_probes(tmp_path: Path) -> None:
    state = SyncState(tmp_path / "state")
    for i in range(3):
        state.record(RunRecord("j", "/d", "concelier", "s3://b/p", f"2026-01-0{i + 1}T00:00:00Z",
                               outcome="published", export_id=f"e{i}", sequence=i))
    runs = state.history(2)
    assert [r.export_id for r in runs] == ["e2", "e1"]
    assert runs[0].as_dict()["exportId"] == "e2" and runs[0].as_dict()["filesFetched"] == 0
    assert state.history(10, dest="/other") == []
    assert state.probe("/d", "s3://b/p", "concelier") is None
    state.save_probe("/d", "s3://b/p", "concelier", ProbeState("etag-1", "e2", 5.0))
    assert state.probe("/d", "s3://b/p", "concelier") == ProbeState("etag-1", "e2", 5.0)
    state.save_probe("/d", "s3://b/p", "concelier", None)
    assert state.probe("/d", "s3://b/p", "concelier") is None


def test_a_file_larger_than_its_cap_is_never_read_past_it(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x" * 100)
    source = FileSource(tmp_path / "src", "file://src")
    stage, partial = tmp_path / "stage", tmp_path / "partial"
    stage.mkdir()
    with pytest.raises(DigestError, match="larger than the signed size 50"):
        source.fetch([Want("f", 50, "sha256:" + "0" * 64)], stage, partial, Progress())
    assert not (stage / "f").exists() and not list(partial.iterdir())


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    data = os.urandom(5000)
    (tmp_path / "src" / "f").write_bytes(data)
    source = FileSource(tmp_path / "src", "file://src")
    stage, partial = tmp_path / "stage", tmp_path / "partial"
    stage.mkdir()
    partial.mkdir()
    want = Want("f", 5000, "sha256:" + "1" * 64)
    (partial / partial_name(want)).write_bytes(data[:1234])
    moved: list[int] = []
    stats = source.fetch([want], stage, partial, Progress(advance=moved.append))
    assert (stage / "f").read_bytes() == data
    assert sum(moved) == 5000 - 1234 and stats.bytes_fetched == 5000 - 1234  # what crossed the network


def test_one_route_table_for_every_file_of_an_export() -> None:
    from stella_mirror.bundle.layout import route

    assert route("concelier", "mirror/index.json.jws").url == "/concelier/exports/index.json.jws"
    assert route("concelier", "mirror/index.json").cache == "index"
    pinned = route("concelier", "mirror/index.json", "e1")
    assert pinned.url == "/concelier/exports/@e1/index.json" and pinned.cache == "payload"
    bundle = route("concelier", "mirror/p/bundle.json.sig", "e1")
    assert (bundle.url, bundle.kind, bundle.cache) == ("/concelier/exports/@e1/mirror/p/bundle.json.sig",
                                                       "signature", "payload")
    assert route("concelier", "mirror/p/index.json").kind == "domain-index"
    assert route("excititor", "mirror/d/index.jws".replace("index.jws", "index.json.jws")).url == \
        "/excititor/mirror/d/index.jws"
    art = route("excititor", "mirror/d/exports/k/k.json", "e2")
    assert (art.url, art.kind) == ("/excititor/mirror/@e2/d/exports/k/download", "artifact")
    for bad in ("mirror//index.json", "x/index.json", "mirror/d/other.json", "mirror/.d/index.json"):
        with pytest.raises(MalformedBundleError):
            route("excititor", bad)
    with pytest.raises(MalformedBundleError):
        route("concelier", "mirror/index.json", "latest")


def test_a_transfer_must_keep_the_minimum_throughput_after_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    from stella_mirror.errors import StalledError
    from stella_mirror.sync.sources.interface import Pace

    clock = [100.0]
    monkeypatch.setattr(time_module, "monotonic", lambda: clock[0])
    pace = Pace("up: f", timeout=5, rate=1000, start=clock[0])
    clock[0] += 4.9
    pace.check(1)  # within the grace
    clock[0] += 1.0
    pace.check(1000)  # 5.9 s: 5 s + 1000 B / 1000 B/s = 6 s allowed
    clock[0] += 0.2
    with pytest.raises(StalledError, match="below the minimum of 1000 bytes/s"):
        pace.check(1000)  # 6.1 s for 1000 bytes: a drip
    assert pace.seconds_for(10_000) == 15
    run = Pace("up: f", timeout=5, rate=1000, run_deadline=clock[0] + 2, start=clock[0])
    assert run.seconds_for(10_000) == 2  # bounded by the run's deadline
    clock[0] += 3
    with pytest.raises(StalledError, match="passed its deadline"):
        run.check(10**9)
