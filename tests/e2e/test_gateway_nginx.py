"""A real nginx with the RENDERED configuration (``stella-mirror gateway render``) in front of a real ``serve``.

Three domains on their own host names with self-signed certificates: ``primary`` (Basic Auth), ``community``
(open, download budget 3/hour) and ``partner`` (bearer tokens only). Shown here: the right certificate per host
name; Basic Auth per domain and primary's user refused on community; X-Cache-Status MISS then HIT and a new
export visible once the index's max-age (the origin's Cache-Control: mirror.cache, 60 s by default, 10 s here to keep
the test short) has passed; 429 from limit_req; the
bearer-only domain through the gateway; ``nginx -s reload`` and ``stella-mirror reload`` after rotating an
htpasswd file and a certificate under a continuous request loop with no failed request; ``smoke`` passing, and
failing by name on a tampered bundle and on wrong credentials; the community host's index not mentioning primary.

Client identity and the edge (issue 19): two client addresses with their own budgets at the gateway and the
origin (``mirror.trustedProxies``), ``?bust=N`` neither missing the cache nor escaping the quota, the gateway's
429 the same as the origin's, fresh request ids and no stale ``RateLimit-*`` on cache hits; and a second nginx
as a shared cache (docs/cdn.md's recipe, as written) that never hands primary's authenticated bundle to an
anonymous caller.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import zstandard
from test_serve_reload import fingerprint, htpasswd, make_cert, served_fingerprint

from clitools import cli, flip
from serverproc import CLI, ServerProc, free_port, hermetic_env, start_server
from stella_mirror.bundle.keyfiles import generate_keypair, load_signing_key
from tokens import TokenIssuer
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOSTS = {d: f"{d}.mirror.test" for d in ("primary", "community", "partner")}
INDEX_MAX_AGE = 10


@dataclass
class Stack:
    tmp: Path
    port: int
    origin: ServerProc
    conf: Path
    nginx: subprocess.Popen[bytes]
    cacert: Path
    key_pub: Path
    token_file: Path
    croot: Path
    certs: dict[str, Path]

    def client(self, domain: str, **kwargs: object) -> httpx.Client:
        """A client for a domain's host name, connected to the gateway on loopback (like curl --resolve)."""
        host = HOSTS[domain]
        port = self.port

        def resolve(request: httpx.Request) -> None:
            request.headers["Host"] = f"{host}:{port}"
            request.extensions["sni_hostname"] = host
            request.url = request.url.copy_with(host="127.0.0.1")

        ctx = ssl.create_default_context(cafile=str(self.cacert))
        return httpx.Client(base_url=f"https://{host}:{port}", verify=ctx, timeout=10,
                            event_hooks={"request": [resolve]}, **kwargs)  # type: ignore[arg-type]

    def get(self, domain: str, path: str, **kwargs: object) -> httpx.Response:
        with self.client(domain) as c:
            return c.get(path, **kwargs)  # type: ignore[arg-type]

    def nginx_cmd(self, *args: str) -> list[str]:
        return [NGINX, "-p", str(self.tmp / "nginx"), "-e", str(self.tmp / "nginx-error.log"), "-c", str(self.conf),
                *args]

    def smoke(self, domain: str, *auth: str) -> subprocess.CompletedProcess[str]:
        return cli("smoke", "--base-url", f"https://{HOSTS[domain]}:{self.port}", "--domain", domain,
                   "--key", self.key_pub, "--resolve", f"{HOSTS[domain]}:{self.port}:127.0.0.1",
                   "--cacert", self.cacert, *auth, timeout=60)


def _config(tmp: Path, gateway_port: int, origin_port: int, pw: dict[str, Path], certs: dict[str, Path],
            jwks: Path) -> str:
    """As the shipped profiles write it: each domain's site (host names, certificate, htpasswd) once in
    mirror.domains, the product lines with their authentication switch and quotas."""

    def site(d: str) -> str:
        htpasswd = f", htpasswd: {pw[d]}" if d in pw else ""
        return (f"    - {{id: {d}, hostnames: [{HOSTS[d]}], "
                f"tls: {{certFile: {certs[d]}, keyFile: {certs[d].with_suffix('.key')}}}{htpasswd}}}\n")

    primary = "      - {id: primary, requireAuthentication: true}\n"
    community = "      - {id: community, requireAuthentication: false, maxDownloadRequestsPerHour: 3}\n"
    partner = "      - {id: partner, requireAuthentication: true}\n"
    user = "\n    user: root" if os.geteuid() == 0 else ""
    return f"""\
concelier:
  mirror:
    exportRoot: {tmp / 'concelier'}
    domains:
{primary}{community}{partner}excititor:
  artifacts: {{filesystem: {{root: {tmp / 'excititor'}}}}}
  mirror:
    domains:
{primary}{partner}authority:
  issuer: https://authority.test
  audiences: [stella-mirror]
  jwksFile: {jwks}
mirror:
  trustedProxies: [127.0.0.1/32]
  docsUrl: https://docs.mirror.test/runbook
  domains:
{"".join(site(d) for d in HOSTS)}  cache: {{indexMaxAgeSeconds: {INDEX_MAX_AGE}}}
  gateway:
    terminateTls: true
    listen: {gateway_port}
    redirectListen: 0
    healthListen: 0
    upstreams: {{concelier: "127.0.0.1:{origin_port}", excititor: "127.0.0.1:{origin_port}"}}
    cacheDir: {tmp / 'nginx' / 'cache'}
    pidFile: {tmp / 'nginx' / 'nginx.pid'}
    accessLog: {tmp / 'nginx' / 'access.log'}
    errorLog: {tmp / 'nginx-error.log'}{user}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway")
    key = generate_keypair(tmp / "keys")
    advs = {d: [advisory(f"CVE-2024-{i}{n}") for n in range(3)] for i, d in enumerate(HOSTS)}
    publish_concelier(tmp / "concelier", key, advs, "e1")
    publish_excititor(tmp / "excititor", key, {d: {"consensus": [{"v": 1}]} for d in ("primary", "partner")}, "x1")
    tls = tmp / "tls"
    tls.mkdir()
    certs = {d: make_cert(tls, d, host)[0] for d, host in HOSTS.items()}
    cacert = tmp / "ca.pem"
    cacert.write_text("".join(c.read_text() for c in certs.values()))
    pw = {"primary": tmp / "primary.htpasswd", "community": tmp / "community.htpasswd"}
    htpasswd(pw["primary"], {"alice": "alice-pw", "steady": "steady-pw"})
    htpasswd(pw["community"], {"bob": "bob-pw"})
    issuer = TokenIssuer()
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    token_file = tmp / "token"
    token_file.write_text(issuer.mint(scope="concelier.mirror.read excititor.mirror.read", exp=int(time.time()) + 3600))
    cfg = tmp / "mirror.yaml"
    port = free_port()
    cfg.write_text(_config(tmp, port, 1, pw, certs, jwks))
    origin = start_server(tmp / "origin", config=cfg, ready_path="/readyz")
    cfg.write_text(_config(tmp, port, origin.port, pw, certs, jwks))  # serve reads no gateway key
    (tmp / "nginx").mkdir()
    render = cli("gateway", "render", "--config", cfg, "--out", tmp / "rendered")
    assert render.returncode == 0, render.stderr
    conf = tmp / "rendered" / "nginx.conf"
    stack = Stack(tmp, port, origin, conf, None, cacert, tmp / "keys" / "mirror-key.pub", token_file,  # type: ignore[arg-type]
                  tmp / "concelier", certs)
    test = subprocess.run(stack.nginx_cmd("-t"), capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    stack.nginx = subprocess.Popen(stack.nginx_cmd("-g", "daemon off;"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            if stack.get("community", "/concelier/exports/index.json").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert stack.nginx.poll() is None and time.monotonic() < deadline, (tmp / "nginx-error.log").read_text()
        time.sleep(0.1)
    try:
        yield stack
    finally:
        stack.nginx.terminate()
        stack.nginx.wait(10)
        origin.stop()


def test_each_host_name_gets_its_domain_certificate(stack: Stack) -> None:
    for domain, host in HOSTS.items():
        assert served_fingerprint(stack.port, host) == fingerprint(stack.certs[domain])
    with pytest.raises(OSError):  # a name no domain claims: the handshake is refused
        served_fingerprint(stack.port, "other.mirror.test")


def test_basic_auth_per_domain(stack: Stack) -> None:
    manifest = "/concelier/exports/mirror/{}/manifest.json"
    r = stack.get("primary", manifest.format("primary"))
    assert r.status_code == 401 and 'Basic realm="primary"' in r.headers["www-authenticate"]
    assert r.headers["content-type"] == "text/html"  # refused by nginx itself, before the origin
    assert stack.get("primary", manifest.format("primary"), auth=("alice", "wrong")).status_code == 401
    assert stack.get("primary", manifest.format("primary"), auth=("alice", "alice-pw")).status_code == 200
    # Community is open (no credentials needed), but primary's user is refused there: checked by the origin
    # against community's own file.
    assert stack.get("community", manifest.format("community")).status_code == 200
    assert stack.get("community", manifest.format("community"), auth=("bob", "bob-pw")).status_code == 200
    refused = stack.get("community", manifest.format("community"), auth=("alice", "alice-pw"))
    assert refused.status_code == 401 and refused.headers["x-request-id"]
    # A domain is only served on its host name: primary's files are not on the community host.
    assert stack.get("community", manifest.format("primary"), auth=("alice", "alice-pw")).status_code == 404


def test_bearer_only_domain_through_the_gateway(stack: Stack) -> None:
    path = "/concelier/exports/mirror/partner/bundle.json"
    token = stack.token_file.read_text()
    assert stack.get("partner", path).status_code == 401
    r = stack.get("partner", path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.headers["x-cache-status"] == "BYPASS"  # only the origin can judge it
    assert stack.get("partner", path, headers={"Authorization": "Bearer not.a.token"}).status_code == 401


def test_community_index_does_not_mention_primary(stack: Stack) -> None:
    r = stack.get("community", "/concelier/exports/index.json")
    assert r.status_code == 200 and "primary" not in r.text and "partner" not in r.text
    assert [d["domainId"] for d in r.json()["domains"]] == ["community"]
    own = stack.croot / "latest" / "mirror" / "community" / "index.json"
    assert r.content == own.read_bytes()  # community's own signed index
    assert stack.get("community", "/concelier/exports/index.json.jws").content == \
        own.with_name("index.json.jws").read_bytes()


RATELIMIT = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


def _from(address: str) -> httpx.HTTPTransport:
    """A transport whose connections leave from ``address`` (like ``curl --interface``)."""
    return httpx.HTTPTransport(local_address=address, verify=False)


def _origin_clients(stack: Stack, last_id: str) -> dict[str, str]:
    """Request id → client address in the origin's access log, once it has the line of ``last_id``
    (the log is flushed every half second)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in stack.origin.access_lines()]
        clients = {e["requestId"]: e["client"] for e in lines}
        if last_id in clients or time.monotonic() > deadline:
            return clients
        time.sleep(0.2)


def test_two_clients_their_own_quota_and_query_strings_do_not_bust(stack: Stack) -> None:
    path = "/concelier/exports/mirror/community/bundle.json"
    answers = []
    with stack.client("community", transport=_from("127.0.0.1")) as a:
        for n in range(4):
            answers.append(a.get(path, params={"bust": str(n)}))  # ?bust=N: the same file, the same budget
    statuses = [(r.status_code, r.headers.get("x-cache-status")) for r in answers]
    # Budget 3/hour: the gateway's bucket holds 3; cached answers count there (the origin saw one request).
    assert statuses == [(200, "MISS"), (200, "HIT"), (200, "HIT"), (429, None)], statuses
    miss, hits, refused = answers[0], answers[1:3], answers[3]
    assert miss.headers["ratelimit-limit"] == "3" and miss.headers["ratelimit-remaining"] == "2"  # the origin's
    for hit in hits:  # a cached answer: no stale counts, its own request id
        assert not set(RATELIMIT) & set(hit.headers), hit.headers
    ids = [r.headers["x-request-id"] for r in answers]
    assert len(set(ids)) == 4 and all(ids), ids
    # The gateway's refusal is the origin's 429: problem+json, Retry-After, RateLimit-*.
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "https://stella-ops.org/problems/quota-exceeded"
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) > 0 and refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["cache-control"] == "no-store"
    # Another client address has its own budget, at the gateway and at the origin.
    with stack.client("community", transport=_from("127.0.0.2")) as b:
        other = b.get(path, params={"bust": "99"})
        signature = b.get(path + ".jws")  # not cached yet: reaches the origin
    assert other.status_code == 200 and other.headers["x-cache-status"] == "HIT"
    assert signature.status_code == 200 and signature.headers["x-cache-status"] == "MISS"
    assert stack.get("primary", "/concelier/exports/mirror/primary/bundle.json",
                     auth=("alice", "alice-pw")).status_code == 200  # another domain's budget is its own
    log = [json.loads(line) for line in (stack.tmp / "nginx" / "access.log").read_text().splitlines()]
    assert {"cache", "status", "user", "requestId"} <= set(log[-1])
    assert all("alice-pw" not in json.dumps(line) for line in log)
    # The origin counted the miss for the real client (X-Forwarded-For from its trusted gateway), not the gateway.
    clients = _origin_clients(stack, signature.headers["x-request-id"])
    assert clients[signature.headers["x-request-id"]] == "127.0.0.2"
    assert clients[miss.headers["x-request-id"]] == "127.0.0.1"

    # The origin's own 429 (asked directly, from a third address) has the same headers and body type.
    def direct(address: str, forwarded: str | None = None) -> httpx.Response:
        headers = {"Host": HOSTS["community"]}
        if forwarded:
            headers["X-Forwarded-For"] = forwarded
        with httpx.Client(transport=_from(address), timeout=10) as c:
            return c.get(stack.origin.url(path), headers=headers)

    for _ in range(3):
        assert direct("127.0.0.3").status_code == 200
    origin_refused = direct("127.0.0.3")
    assert origin_refused.status_code == 429
    same = ("content-type", "cache-control", "retry-after", "x-request-id", *RATELIMIT)
    assert {h: h in origin_refused.headers for h in same} == {h: h in refused.headers for h in same}
    assert origin_refused.headers["content-type"] == refused.headers["content-type"]
    assert set(origin_refused.json()) == set(refused.json())
    assert origin_refused.json()["type"] == refused.json()["type"]


def test_origin_reads_forwarded_for_only_from_trusted_peers(stack: Stack) -> None:
    path = "/concelier/exports/mirror/community/bundle.json"

    def direct(address: str, forwarded: str) -> httpx.Response:
        with httpx.Client(transport=_from(address), timeout=10) as c:
            return c.get(stack.origin.url(path), headers={"Host": HOSTS["community"], "X-Forwarded-For": forwarded})

    # From the trusted gateway address: the rightmost untrusted hop is the client, each with its own budget.
    assert [direct("127.0.0.1", "10.9.9.1").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert direct("127.0.0.1", "10.9.9.2").status_code == 200
    forged = direct("127.0.0.1", "10.9.9.1, 10.9.9.4, 127.0.0.1")  # left of the client's hop: its own words
    assert forged.status_code == 200 and forged.headers["ratelimit-remaining"] == "2"
    # From an untrusted peer the header is ignored: its own address is the client, whatever it claims.
    untrusted = [direct("127.0.0.4", f"10.9.9.{n}") for n in range(10, 14)]
    assert [r.status_code for r in untrusted] == [200, 200, 200, 429]
    clients = _origin_clients(stack, forged.headers["x-request-id"])
    assert clients[untrusted[0].headers["x-request-id"]] == "127.0.0.4"
    assert clients[forged.headers["x-request-id"]] == "10.9.9.4"


def test_smoke_passes_and_fails_by_name(stack: Stack) -> None:
    pw = stack.tmp / "alice.pw"
    pw.write_text("alice-pw\n")
    ok = stack.smoke("primary", "--user", "alice", "--password-file", str(pw))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == [
        "index", "index-signature", "manifest-head", "bundle", "bundle-signature", "excititor-index", "cache"]
    assert all(line.startswith("ok ") for line in lines) and "HIT" in lines[-1]
    bad = stack.tmp / "wrong.pw"
    bad.write_text("nope\n")
    wrong = stack.smoke("primary", "--user", "alice", "--password-file", str(bad))
    assert wrong.returncode == 4 and wrong.stdout.splitlines()[-1].startswith("FAIL index: ")
    assert "401" in wrong.stdout and "check index failed" in wrong.stderr
    # Through the bearer-only domain (never cached): passes, then fails by name once the bundle is tampered with.
    token = ["--token-file", str(stack.token_file)]
    assert stack.smoke("partner", *token).returncode == 0
    bundle = stack.croot / "latest" / "mirror" / "partner" / "bundle.json"
    variant = bundle.with_name("bundle.json.zst")  # the signed .zst the server negotiates for zstd clients
    original, original_zst = bundle.read_bytes(), variant.read_bytes()
    try:
        flip(bundle, 40)  # both representations carry the tampered bytes
        variant.write_bytes(zstandard.ZstdCompressor().compress(bundle.read_bytes()))
        tampered = stack.smoke("partner", *token)
        assert tampered.returncode == 11, tampered.stdout + tampered.stderr
        assert tampered.stdout.splitlines()[-1].startswith("FAIL bundle: ")
    finally:
        bundle.write_bytes(original)
        variant.write_bytes(original_zst)


def test_verify_accepts_the_gateway_url(stack: Stack) -> None:
    pw = stack.tmp / "steady.pw"
    pw.write_text("steady-pw")
    res = cli("verify", f"https://{HOSTS['primary']}:{stack.port}/concelier/exports", "--key", stack.key_pub,
              "--user", "steady", "--password-file", pw, "--cacert", stack.cacert,
              "--resolve", f"{HOSTS['primary']}:{stack.port}:127.0.0.1")
    assert res.returncode == 0, res.stderr
    assert "1 domain(s) [primary]" in res.stdout


def test_rotation_under_load_then_a_new_export_after_the_index_ttl(stack: Stack) -> None:
    index = "/concelier/exports/index.json"
    first = stack.get("community", index)
    assert first.json()["exportId"] == "e1"
    # Publish now; the gateway keeps the cached index until its max-age has passed — meanwhile rotate.
    key = load_signing_key(stack.tmp / "keys" / "mirror-key.pem")
    published_at = time.monotonic()
    publish_concelier(stack.croot, key, {d: [advisory(f"CVE-2025-{d}")] for d in HOSTS}, "e2")
    assert stack.get("community", index).json()["exportId"] == "e1"

    stop = threading.Event()
    failures: list[str] = []
    counts = {"ok": 0}

    def loop() -> None:
        while not stop.is_set():
            for domain, auth in (("primary", ("steady", "steady-pw")), ("community", None)):
                try:
                    with stack.client(domain, auth=auth) as c:  # a new connection each time
                        r = c.get(f"/concelier/exports/mirror/{domain}/manifest.json")
                    ok, detail = r.status_code == 200, f"{domain} {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, f"{domain} {exc!r}"
                if ok:
                    counts["ok"] += 1
                else:
                    failures.append(detail)

    # The renewal is trusted by clients before it is served (self-signed here: added to their bundle).
    crt, keyfile = make_cert(stack.tmp / "tls", "renewed", HOSTS["primary"])
    with stack.cacert.open("a") as bundle:
        bundle.write(crt.read_text())
    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        pw = stack.tmp / "primary.htpasswd"
        htpasswd(pw, {"alice": "alice-new", "steady": "steady-pw", "carol": "carol-pw"})
        shutil.copy(crt, stack.certs["primary"])
        shutil.copy(keyfile, stack.certs["primary"].with_suffix(".key"))
        assert stack.origin.pid_file is not None
        origin = subprocess.run([*CLI, "reload", "--pid-file", str(stack.origin.pid_file)], env=hermetic_env({}),
                                capture_output=True, text=True, timeout=30)
        assert origin.returncode == 0, origin.stderr
        gateway = subprocess.run(stack.nginx_cmd("-s", "reload"), capture_output=True, text=True, timeout=30)
        assert gateway.returncode == 0, gateway.stderr
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert counts["ok"] > 20, counts
    assert served_fingerprint(stack.port, HOSTS["primary"]) == fingerprint(crt)
    manifest = "/concelier/exports/mirror/primary/manifest.json"
    # The new credential works through nginx AND at the origin; the old password no longer does.
    assert stack.get("primary", manifest, auth=("carol", "carol-pw")).status_code == 200
    direct = httpx.get(stack.origin.url(manifest), headers={"Host": HOSTS["primary"]}, auth=("carol", "carol-pw"))
    assert direct.status_code == 200
    assert stack.get("primary", manifest, auth=("alice", "alice-pw")).status_code == 401
    assert stack.get("primary", manifest, auth=("alice", "alice-new")).status_code == 200

    # The index's max-age has passed: the new export shows (nginx may answer stale once while it updates).
    time.sleep(max(0.0, INDEX_MAX_AGE + 1 - (time.monotonic() - published_at)))
    deadline = time.monotonic() + 15
    while stack.get("community", index).json()["exportId"] != "e2":
        assert time.monotonic() < deadline
        time.sleep(0.5)


def _cdn_recipe() -> str:
    """The shared-cache configuration documented as runbook §5's recipe (docs/cdn.md), as written there."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "cdn.md").read_text()
    return text.split("```nginx\n", 1)[1].split("```", 1)[0]


def test_a_shared_cache_in_front_of_the_gateway(stack: Stack) -> None:
    cdn_port = free_port()
    root = stack.tmp / "cdn"
    root.mkdir()
    recipe = (_cdn_recipe().replace("@CACHE_DIR@", str(root / "cache")).replace("@GATEWAY@", f"127.0.0.1:{stack.port}")
              .replace("@LISTEN@", f"listen 127.0.0.1:{cdn_port};").replace("@HOSTS@", " ".join(HOSTS.values()))
              .replace("@CA_FILE@", str(stack.cacert)))
    assert "@" not in recipe
    (root / "recipe.conf").write_text(recipe)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(f"{user}worker_processes 1;\npid {root / 'nginx.pid'};\nevents {{ worker_connections 256; }}\n"
                    f"http {{\n    access_log {root / 'access.log'};\n    include {root / 'recipe.conf'};\n}}\n")
    cmd = [NGINX, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    test = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    cdn = subprocess.Popen([*cmd, "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        def get(domain: str, path: str, **kwargs: object) -> httpx.Response:
            deadline = time.monotonic() + 10
            while True:
                try:
                    return httpx.get(f"http://127.0.0.1:{cdn_port}{path}", headers={"Host": HOSTS[domain]},
                                     timeout=10, **kwargs)  # type: ignore[arg-type]
                except httpx.ConnectError:
                    assert cdn.poll() is None and time.monotonic() < deadline, (root / "error.log").read_text()
                    time.sleep(0.1)

        bundle = "/concelier/exports/mirror/primary/bundle.json"
        first = get("primary", bundle, auth=("steady", "steady-pw"))
        export_id = first.headers["x-mirror-export-id"]  # the gateway may still hold an earlier export's copy
        payload = (stack.croot / export_id / "mirror" / "primary" / "bundle.json").read_bytes()
        assert first.status_code == 200 and first.content == payload
        assert "public" not in first.headers["cache-control"] and "Authorization" in first.headers["vary"]
        again = get("primary", bundle, auth=("steady", "steady-pw"))
        assert again.status_code == 200 and again.headers["x-cdn-cache"] == "HIT"  # it is stored, for steady
        anonymous = get("primary", bundle)
        assert anonymous.status_code == 401 and payload not in anonymous.content
        assert anonymous.headers["x-cdn-cache"] == "MISS"  # sent on, and refused by the gateway
        other = get("primary", bundle, auth=("bob", "bob-pw"))  # community's user
        assert other.status_code == 401 and payload not in other.content
        busted = get("primary", bundle + "?bust=1")
        assert busted.status_code == 401
        # The open domain: its repeat request is answered by the shared cache.
        manifest = "/concelier/exports/mirror/community/manifest.json"
        assert get("community", manifest).status_code == 200
        repeat = get("community", manifest, params={"bust": "2"})
        assert repeat.status_code == 200 and repeat.headers["x-cdn-cache"] == "HIT"
        assert repeat.headers["cache-control"] == "public, max-age=300, immutable"
    finally:
        cdn.terminate()
        cdn.wait(10)


def test_metrics_show_days_left_per_configured_certificate(stack: Stack) -> None:
    from cryptography import x509
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(stack.origin.url("/metrics")).text
    fam = next(f for f in text_string_to_metric_families(text) if f.name == "stella_mirror_tls_days_left")
    days = {s.labels["domain"]: s.value for s in fam.samples}
    assert set(days) == set(HOSTS)
    for domain, crt in stack.certs.items():
        not_after = x509.load_pem_x509_certificate(crt.read_bytes()).not_valid_after_utc.timestamp()
        assert abs(days[domain] - (not_after - time.time()) / 86400) < 0.1, (domain, days)


def test_the_landing_page_links_status_and_indexes(stack: Stack) -> None:
    r = stack.get("community", "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for href in ("/status", "/concelier/exports/index.json", "/excititor/mirror/domains",
                 "https://docs.mirror.test/runbook"):
        assert f"href='{href}'" in r.text
    assert stack.get("community", "/nothing-here").status_code == 404
