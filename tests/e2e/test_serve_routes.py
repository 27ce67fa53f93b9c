"""Every route of `stella-mirror serve` over a real socket, with httpx and with curl.

Checks status, headers and bytes (the body is the file on disk; its ETag is the digest the signed index
lists), 304 / 206 / 416 / HEAD, precompressed variants chosen by Accept-Encoding (decoding to the signed
bytes), export pinning, unknown domains and host-bound domains.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import zstandard

from mirrorsite import SyncASGITransport, production_app
from serverproc import ServerProc, start_server
from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.server.files import precompress
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e

PAYLOAD = "public, max-age=300, immutable"
ALL_DOMAINS_HOST = "hosted.mirror.test"
"""The index lists only the domains readable on the request's host: on this one, all three."""


def host_for(url: str) -> dict[str, str]:
    return {"Host": ALL_DOMAINS_HOST} if url.startswith("/concelier/exports/index.json") else {}


INDEX = "public, max-age=60"


@dataclass
class Mirror:
    sp: ServerProc
    croot: Path
    xroot: Path
    cexport: Path
    xexport: Path
    env: dict[str, str]

    def cfile(self, rel: str) -> bytes:
        return (self.cexport / rel).read_bytes()

    def xfile(self, rel: str) -> bytes:
        return (self.xexport / rel).read_bytes()


def raw_get(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """GET without content decoding: the bytes as sent."""
    with client.stream("GET", url, headers=headers) as r:
        return r, b"".join(r.iter_raw())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    tmp = tmp_path_factory.mktemp("routes")
    key = generate_keypair(tmp / "keys")
    big = [advisory(f"CVE-2024-{i:05d}") for i in range(3000)]  # ~1.5 MB: the large-file path
    cexport = publish_concelier(tmp / "concelier", key, {"primary": big, "community": big[:3], "hosted": big[:2]}, "e1")
    xexport = publish_excititor(
        tmp / "excititor", key, {"community": {"consensus": [{"v": i} for i in range(50)], "claims": [{"c": 1}]}}, "x1"
    )
    for rel in ("mirror/primary/bundle.json", "mirror/community/bundle.json", "mirror/index.json"):
        precompress(cexport / rel)
    env = {
        "CONCELIER__MIRROR__EXPORTROOT": str(tmp / "concelier"),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "CONCELIER__MIRROR__DOMAINS__2__ID": "hosted",
        "CONCELIER__MIRROR__DOMAINS__2__HOSTNAMES__0": "hosted.mirror.test",
        "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": str(tmp / "excititor"),
        "EXCITITOR__MIRROR__DOMAINS__0__ID": "community",
    }
    sp = start_server(tmp / "srv", env=env, ready_path="/readyz")
    try:
        yield Mirror(sp, tmp / "concelier", tmp / "excititor", cexport, xexport, {**env, "MIRROR__ACCESSLOG": "off"})
    finally:
        sp.stop()


@pytest.fixture(params=["serve", "in-process"])
def client(request: pytest.FixtureRequest, mirror: Mirror) -> Iterator[httpx.Client]:
    """The serve process over a socket, and the same application (the production app factory on the same
    configuration) called in process: every request-path rule answers the same both ways."""
    # No automatic decompression: the tests look at the bytes on the wire.
    if request.param == "serve":
        with httpx.Client(base_url=mirror.sp.base, timeout=10, headers={"Accept-Encoding": "identity"}) as c:
            yield c
        return
    app = production_app(mirror.env)
    with httpx.Client(
        transport=SyncASGITransport(app), base_url="http://127.0.0.1", headers={"Accept-Encoding": "identity"}
    ) as c:
        yield c


@pytest.fixture
def wire(mirror: Mirror) -> Iterator[httpx.Client]:
    """The serve process only (for what only it has: its access log, its worker's metrics)."""
    with httpx.Client(base_url=mirror.sp.base, timeout=10, headers={"Accept-Encoding": "identity"}) as c:
        yield c


CONCELIER_FILES = [
    ("/concelier/exports/index.json", "mirror/index.json", INDEX, "application/json"),
    ("/concelier/exports/index.json.jws", "mirror/index.json.jws", INDEX, "application/jose"),
    ("/concelier/exports/index.json.sig", "mirror/index.json.sig", INDEX, "text/plain; charset=us-ascii"),
    ("/concelier/exports/mirror/primary/manifest.json", "mirror/primary/manifest.json", PAYLOAD, "application/json"),
    ("/concelier/exports/mirror/primary/bundle.json", "mirror/primary/bundle.json", PAYLOAD, "application/json"),
    (
        "/concelier/exports/mirror/primary/bundle.json.jws",
        "mirror/primary/bundle.json.jws",
        PAYLOAD,
        "application/jose",
    ),
    (
        "/concelier/exports/mirror/primary/bundle.json.sig",
        "mirror/primary/bundle.json.sig",
        PAYLOAD,
        "text/plain; charset=us-ascii",
    ),
    ("/concelier/exports/mirror/community/bundle.json", "mirror/community/bundle.json", PAYLOAD, "application/json"),
    ("/concelier/exports/mirror/community/index.json", "mirror/community/index.json", INDEX, "application/json"),
    (
        "/concelier/exports/mirror/community/index.json.jws",
        "mirror/community/index.json.jws",
        INDEX,
        "application/jose",
    ),
    (
        "/concelier/exports/mirror/community/index.json.sig",
        "mirror/community/index.json.sig",
        INDEX,
        "text/plain; charset=us-ascii",
    ),
]


@pytest.mark.parametrize(("url", "rel", "cache", "ctype"), CONCELIER_FILES)
def test_concelier_files_with_httpx(
    mirror: Mirror, client: httpx.Client, url: str, rel: str, cache: str, ctype: str
) -> None:
    r = client.get(url, headers=host_for(url))
    assert r.status_code == 200
    assert r.content == mirror.cfile(rel)
    assert r.headers["etag"] == f'"{sha(r.content)}"'
    assert r.headers["cache-control"] == cache
    assert r.headers["content-type"] == ctype
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["x-mirror-export-id"] == "e1"
    assert r.headers["accept-ranges"] == "bytes"
    assert "last-modified" in r.headers and r.headers["x-request-id"]
    vary = r.headers.get("vary", "")
    assert ("Accept-Encoding" in vary) == rel.endswith(".json")
    # This site's index depends on the caller; a domain's own index does not.
    assert ("Authorization" in vary) == url.startswith("/concelier/exports/index.json")


def test_index_lists_only_domains_readable_on_the_host(mirror: Mirror, client: httpx.Client) -> None:
    r = client.get("/concelier/exports/index.json")  # 'hosted' is not served on this host
    assert r.status_code == 200 and r.headers["x-mirror-index"] == "filtered-unsigned"
    assert [d["domainId"] for d in r.json()["domains"]] == ["community", "primary"]
    assert "hosted" not in r.text and "Authorization" in r.headers["vary"]
    assert client.get("/concelier/exports/index.json.jws").status_code == 404
    full = client.get("/concelier/exports/index.json", headers={"Host": ALL_DOMAINS_HOST})
    assert full.content == mirror.cfile("mirror/index.json")


def test_etags_are_the_signed_digests(mirror: Mirror, client: httpx.Client) -> None:
    index = client.get("/concelier/exports/index.json", headers={"Host": ALL_DOMAINS_HOST}).json()
    for dom in index["domains"]:
        for kind in ("manifest", "bundle"):
            host = {"Host": "hosted.mirror.test"} if dom["domainId"] == "hosted" else {}
            r = client.head("/concelier/exports/" + dom[kind]["path"], headers=host)
            assert r.status_code == 200
            assert r.headers["etag"] == '"' + dom[kind]["digest"].removeprefix("sha256:") + '"'
            assert r.headers["content-length"] == str(dom[kind]["sizeBytes"])


@pytest.mark.parametrize("url", [u for u, *_ in CONCELIER_FILES[:5]])
def test_concelier_files_with_curl(mirror: Mirror, tmp_path: Path, url: str) -> None:
    body, headers = tmp_path / "body", tmp_path / "headers"
    host = [f"-HHost: {ALL_DOMAINS_HOST}"] if host_for(url) else []
    subprocess.run(
        ["curl", "-sS", "--fail", *host, "-D", str(headers), "-o", str(body), mirror.sp.url(url)], check=True
    )
    rel = dict((u, r) for u, r, *_ in CONCELIER_FILES)[url]
    assert body.read_bytes() == mirror.cfile(rel)
    text = headers.read_text().lower()
    assert text.startswith("http/1.1 200")
    assert f'etag: "{sha(body.read_bytes())}"' in text
    head = subprocess.run(["curl", "-sS", *host, "-I", mirror.sp.url(url)], check=True, capture_output=True, text=True)
    assert head.stdout.lower().startswith("http/1.1 200")
    assert f"content-length: {len(body.read_bytes())}" in head.stdout.lower()


def test_excititor_routes(mirror: Mirror, client: httpx.Client) -> None:
    r = client.get("/excititor/mirror/domains")
    assert r.status_code == 200 and r.headers["cache-control"] == INDEX
    doms = r.json()["domains"]
    assert [d["domainId"] for d in doms] == ["community"]
    assert doms[0]["summary"]["exportKeys"] == ["claims", "consensus"]
    assert r.headers["etag"] == f'"{sha(r.content)}"'
    index_bytes = mirror.xfile("mirror/community/index.json")
    for url in ("/excititor/mirror/community/index", "/excititor/mirror/domains/community/index"):
        r = client.get(url)
        assert r.status_code == 200 and r.content == index_bytes and r.headers["cache-control"] == INDEX
        assert [e["exportKey"] for e in r.json()["exports"]] == ["claims", "consensus"]
    for suffix in (".jws", ".sig"):
        r = client.get(f"/excititor/mirror/community/index{suffix}")
        assert r.status_code == 200 and r.content == mirror.xfile(f"mirror/community/index.json{suffix}")
    index = json.loads(index_bytes)
    entry = next(e for e in index["exports"] if e["exportKey"] == "consensus")
    r = client.get("/excititor/mirror/community/exports/consensus")
    assert r.status_code == 200 and r.json() == entry and r.headers["cache-control"] == INDEX
    r = client.get("/excititor/mirror/community/exports/consensus/download")
    assert r.status_code == 200 and r.headers["cache-control"] == PAYLOAD
    assert "sha256:" + sha(r.content) == entry["digest"] and len(r.content) == entry["sizeBytes"]
    assert r.headers["etag"] == f'"{sha(r.content)}"'
    for suffix in (".jws", ".sig"):
        r = client.get(f"/excititor/mirror/community/exports/consensus/download{suffix}")
        assert r.status_code == 200
        assert r.content == mirror.xfile(f"mirror/community/exports/consensus/consensus.json{suffix}")
    assert client.get("/excititor/mirror/community/exports/nope").status_code == 404
    assert client.get("/excititor/mirror/community/exports/nope/download").status_code == 404
    assert client.get("/excititor/mirror/other/index").status_code == 404


def test_conditional_requests(client: httpx.Client) -> None:
    for url in (
        "/concelier/exports/index.json",
        "/concelier/exports/mirror/primary/bundle.json",
        "/excititor/mirror/domains",
        "/excititor/mirror/community/exports/consensus",
    ):
        first = client.get(url, headers=host_for(url))
        etag, lm = first.headers["etag"], first.headers.get("last-modified")
        for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            r = client.get(url, headers={"If-None-Match": inm, **host_for(url)})
            assert r.status_code == 304, (url, inm)
            assert r.content == b"" and r.headers["etag"] == etag
        assert client.get(url, headers={"If-None-Match": '"other"', **host_for(url)}).status_code == 200
        if lm:
            assert client.get(url, headers={"If-Modified-Since": lm, **host_for(url)}).status_code == 304
            old = "Mon, 01 Jan 2001 00:00:00 GMT"
            assert client.get(url, headers={"If-Modified-Since": old, **host_for(url)}).status_code == 200
            # If-None-Match wins over If-Modified-Since.
            r = client.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": lm, **host_for(url)})
            assert r.status_code == 200


@pytest.mark.parametrize("url", ["/concelier/exports/mirror/primary/bundle.json", "/concelier/exports/index.json"])
def test_ranges(mirror: Mirror, client: httpx.Client, url: str) -> None:
    client.headers.update(host_for(url))
    full = client.get(url).content
    size = len(full)
    cases = [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-50", size - 50, size - 1),
        (f"bytes={size - 10}-{size + 1000}", size - 10, size - 1),
    ]
    for header, start, end in cases:
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == full[start : end + 1]
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert r.headers["content-length"] == str(end - start + 1)
        assert r.headers["etag"] == f'"{sha(full)}"'
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 416, header
        assert r.headers["content-range"] == f"bytes */{size}"
        assert r.headers["content-type"] == "application/problem+json"
    for header in ("bytes=0-1,5-6", "bytes=abc", "lines=1-2", "bytes=9-1"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 200 and r.content == full, header
    etag = client.head(url).headers["etag"]
    r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206 and r.content == full[:10]
    r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == full


def test_head_matches_get_without_body(client: httpx.Client) -> None:
    for url in (
        "/concelier/exports/mirror/primary/bundle.json",
        "/excititor/mirror/community/index",
        "/excititor/mirror/domains",
    ):
        g, h = client.get(url), client.head(url)
        assert h.status_code == 200 and h.content == b""
        for name in ("etag", "content-length", "content-type", "cache-control"):
            assert h.headers[name] == g.headers[name], name


def test_compressed_variants(mirror: Mirror, client: httpx.Client, tmp_path: Path) -> None:
    index = client.get("/concelier/exports/index.json").json()
    signed = {d["domainId"]: d["bundle"]["digest"] for d in index["domains"]}
    url = "/concelier/exports/mirror/primary/bundle.json"
    identity = client.get(url)
    assert "content-encoding" not in identity.headers and identity.headers["vary"] == "Accept-Encoding"
    z, zbody = raw_get(client, url, {"Accept-Encoding": "zstd, gzip"})
    assert z.headers["content-encoding"] == "zstd" and z.headers["vary"] == "Accept-Encoding"
    assert zbody == mirror.cfile("mirror/primary/bundle.json.zst")
    decoded = zstandard.ZstdDecompressor().decompressobj().decompress(zbody)
    assert "sha256:" + sha(decoded) == signed["primary"]
    assert z.headers["etag"] == f'"{sha(zbody)}-zstd"' != identity.headers["etag"]
    g, gbody = raw_get(client, url, {"Accept-Encoding": "gzip;q=1, zstd;q=0.5"})
    assert g.headers["content-encoding"] == "gzip" and g.headers["etag"].endswith('-gzip"')
    assert "sha256:" + sha(gzip.decompress(gbody)) == signed["primary"]
    assert client.get(url, headers={"Accept-Encoding": "zstd;q=0, gzip;q=0"}).headers.get("content-encoding") is None
    # A range over the encoded representation.
    r, part = raw_get(client, url, {"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
    assert r.status_code == 206 and part == gbody[:10]
    # 304 for the compressed representation's own ETag.
    assert client.get(url, headers={"Accept-Encoding": "zstd", "If-None-Match": z.headers["etag"]}).status_code == 304
    # No variant on disk (hosted domain bundle not precompressed): identity even when zstd is asked for.
    assert (
        "content-encoding"
        not in client.get(
            "/concelier/exports/mirror/community/manifest.json", headers={"Accept-Encoding": "zstd"}
        ).headers
    )
    # httpx decoding and curl --compressed both yield the signed bytes.
    with httpx.Client(base_url=mirror.sp.base) as auto:
        assert "sha256:" + sha(auto.get(url, headers={"Accept-Encoding": "gzip"}).content) == signed["primary"]
    out = tmp_path / "b.json"
    subprocess.run(["curl", "-sS", "--fail", "--compressed", "-o", str(out), mirror.sp.url(url)], check=True)
    assert "sha256:" + sha(out.read_bytes()) == signed["primary"]
    # Signatures are never negotiated.
    assert "vary" not in client.get(url + ".jws", headers={"Accept-Encoding": "gzip"}).headers


def test_pinned_exports(mirror: Mirror, client: httpx.Client) -> None:
    assert client.get("/concelier/exports/@e1/index.json").headers["cache-control"] == PAYLOAD
    r = client.get("/concelier/exports/@e1/mirror/primary/manifest.json")
    assert r.status_code == 200 and r.headers["x-mirror-export-id"] == "e1"
    assert r.content == mirror.cfile("mirror/primary/manifest.json")
    assert client.get("/excititor/mirror/@x1/community/exports/consensus/download").status_code == 200
    for url in (
        "/concelier/exports/@e0/index.json",
        "/concelier/exports/@latest/index.json",
        "/excititor/mirror/@zz/community/index",
    ):
        r = client.get(url)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_domains_and_hosts(mirror: Mirror, client: httpx.Client) -> None:
    r = client.get("/concelier/exports/mirror/unknown/manifest.json")
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-domain")
    assert r.headers["cache-control"] == "no-store"
    # 'hosted' answers only on its host name.
    assert client.get("/concelier/exports/mirror/hosted/manifest.json").status_code == 404
    r = client.get("/concelier/exports/mirror/hosted/manifest.json", headers={"Host": "Hosted.Mirror.Test:8080"})
    assert r.status_code == 200 and r.content == mirror.cfile("mirror/hosted/manifest.json")
    # Excititor is served; a Concelier domain id is not an Excititor domain.
    assert client.get("/excititor/mirror/primary/index").status_code == 404


def test_methods_and_unknown_paths(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = client.request(method, "/concelier/exports/index.json")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 404 and body["type"].startswith("https://stella-ops.org/problems/")


def test_export_root_is_never_written(mirror: Mirror) -> None:
    before = sorted(str(p) for p in mirror.croot.rglob("*"))
    httpx.get(mirror.sp.url("/concelier/exports/mirror/primary/bundle.json"))
    assert sorted(str(p) for p in mirror.croot.rglob("*")) == before


def test_access_log_lines(mirror: Mirror, wire: httpx.Client) -> None:
    wire.get(
        "/concelier/exports/mirror/primary/bundle.json",
        headers={"X-Request-ID": "trace-123", "User-Agent": "scanner/1.0"},
    )
    import time

    deadline = time.monotonic() + 5
    line = None
    while time.monotonic() < deadline and line is None:
        for raw in mirror.sp.access_lines():
            rec = json.loads(raw)
            if rec["requestId"] == "trace-123":
                line = rec
        time.sleep(0.1)
    assert line is not None
    assert line["route"] == "concelier.bundle" and line["product"] == "concelier" and line["domain"] == "primary"
    assert line["status"] == 200 and line["bytes"] == len(mirror.cfile("mirror/primary/bundle.json"))
    assert line["userAgent"] == "scanner/1.0" and line["method"] == "GET" and line["exportId"] == "e1"
    assert line["principal"] == "anonymous" and line["client"] == "127.0.0.1"
    assert isinstance(line["durationMs"], float) and line["time"].endswith("Z")


def test_metrics_endpoint(mirror: Mirror, wire: httpx.Client) -> None:
    wire.get("/concelier/exports/index.json")
    text = wire.get("/metrics").text
    assert (
        'stella_mirror_requests_total{domain="_all",product="concelier",route="concelier.index",status="200"}' in text
    )
    assert "stella_mirror_request_duration_seconds_bucket" in text
    assert 'stella_mirror_export_sequence{domain="primary",product="concelier"} 1.0' in text
    assert 'stella_mirror_export_age_seconds{domain="community",product="excititor"}' in text
    assert 'stella_mirror_index_expires_timestamp_seconds{domain="primary",product="concelier"}' in text
    assert 'stella_mirror_response_bytes_total{domain="primary",product="concelier",route="concelier.bundle"}' in text


def test_curl_available() -> None:
    assert shutil.which("curl"), "curl is part of the test toolchain (.ci/run installs it)"


def test_sendfile_mode_serves_the_same_bytes(mirror: Mirror, tmp_path: Path) -> None:
    """``mirror.sendfile: true``: large bodies go out with os.sendfile (ASGI zero-copy send); same bytes,
    same ranges, and a client that hangs up mid-body does not hurt the server."""
    sp = start_server(
        tmp_path / "srv",
        env={
            "CONCELIER__MIRROR__EXPORTROOT": str(mirror.croot),
            "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
            "EXCITITOR__MIRROR__ENABLED": "false",
            "MIRROR__SENDFILE": "true",
        },
    )
    try:
        url = "/concelier/exports/mirror/primary/bundle.json"
        full = mirror.cfile("mirror/primary/bundle.json")
        with httpx.Client(base_url=sp.base, headers={"Accept-Encoding": "identity"}) as c:
            for _ in range(3):  # keep-alive: several bodies on one connection
                r = c.get(url)
                assert r.status_code == 200 and r.content == full
            r = c.get(url, headers={"Range": "bytes=1000-200999"})
            assert r.status_code == 206 and r.content == full[1000:201000]
            assert c.head(url).headers["content-length"] == str(len(full))
            with c.stream("GET", url) as s:  # hang up after the first chunk
                next(s.iter_raw())
            assert c.get("/healthz").status_code == 200
            r = c.get(url)
            assert r.content == full
        assert "Traceback" not in sp.stderr()
    finally:
        sp.stop()


def test_max_ages_are_configurable(tmp_path: Path) -> None:
    """Runbook §5 gives recommended TTLs (the defaults above); an operator may tune them: mirror.cache."""
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(tmp_path / "concelier", key, {"primary": [advisory("CVE-2024-1")]}, "e1")
    sp = start_server(
        tmp_path / "srv",
        env={
            "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "concelier"),
            "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
            "EXCITITOR__MIRROR__ENABLED": "false",
            "MIRROR__CACHE__INDEXMAXAGESECONDS": "5",
            "MIRROR__CACHE__PAYLOADMAXAGESECONDS": "3600",
        },
        ready_path="/readyz",
    )
    try:
        index = httpx.get(sp.url("/concelier/exports/index.json"))
        bundle = httpx.get(sp.url("/concelier/exports/mirror/primary/bundle.json"))
        assert index.headers["cache-control"] == "public, max-age=5"
        assert bundle.headers["cache-control"] == "public, max-age=3600, immutable"
    finally:
        sp.stop()
