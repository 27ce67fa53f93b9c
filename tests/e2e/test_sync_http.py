"""``stella-mirror sync`` from an upstream mirror: our ``serve`` with Basic Auth, then with bearer tokens from a
client-credentials token endpoint on loopback (short-lived JWTs, refreshed across their expiry); a second
``serve`` on the synced tree answers byte-identically."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from serverproc import running
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.sync.sources.interface import Want, partial_name
from synctools import CLI, assert_serves, history, run_cli, sync_args
from tokens import TokenIssuer
from tokenserver import token_endpoint
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e


def htpasswd(path: Path, user: str, password: str) -> None:
    subprocess.run(["htpasswd", "-B", "-c", "-b", str(path), user, password], check=True, capture_output=True)


def upstream_env(croot: Path, xroot: Path, **extra: str) -> dict[str, str]:
    return {
        "CONCELIER__MIRROR__EXPORTROOT": str(croot),
        "CONCELIER__MIRROR__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": str(xroot),
        "EXCITITOR__MIRROR__REQUIREAUTHENTICATION": "true",
        "EXCITITOR__MIRROR__DOMAINS__0__ID": "primary",
        "EXCITITOR__MIRROR__DOMAINS__1__ID": "community",
        **extra,
    }


def basic_env(croot: Path, xroot: Path, htfile: Path) -> dict[str, str]:
    files = {f"{p}__MIRROR__{d}HTPASSWD": str(htfile) for p in ("CONCELIER", "EXCITITOR")
             for d in ("", "DOMAINS__0__", "DOMAINS__1__")}
    return upstream_env(croot, xroot, **files)


ROUTES = [
    "/concelier/exports/index.json", "/concelier/exports/index.json.jws", "/concelier/exports/index.json.sig",
    *(f"/concelier/exports/mirror/{d}/{f}" for d in ("primary", "community")
      for f in ("manifest.json", "bundle.json", "bundle.json.jws", "bundle.json.sig")),
    "/excititor/mirror/primary/index", "/excititor/mirror/primary/index.jws",
    "/excititor/mirror/community/index", "/excititor/mirror/primary/exports/k1/download",
    "/excititor/mirror/primary/exports/k1/download.jws", "/excititor/mirror/community/exports/k1/download.sig",
]


def test_upstream_basic_auth_then_byte_identical_downstream(tmp_path: Path, keydir: Path,
                                                            signing_key: SigningKey) -> None:
    croot, xroot = tmp_path / "up-c", tmp_path / "up-x"
    c1 = publish_concelier(croot, signing_key, {"primary": [advisory("CVE-1")], "community": [advisory("CVE-2")]},
                           "c1")
    x1 = publish_excititor(xroot, signing_key, {"primary": {"k1": [{"v": 1}]}, "community": {"k1": [{"v": 2}]}},
                           "x1")
    htfile, pwfile = tmp_path / "up.htpasswd", tmp_path / "sync-password"
    htpasswd(htfile, "downstream", "s3cret-pw")
    pwfile.write_text("s3cret-pw\n")
    key, state = keydir / "mirror-key.pub", tmp_path / "state"
    dc, dx = tmp_path / "down-c", tmp_path / "down-x"
    with running(tmp_path / "up", env=basic_env(croot, xroot, htfile)) as up:
        denied = run_cli(*sync_args(up.base, dc, "concelier", key, state))
        assert denied.returncode == 4 and "HTTP 401" in denied.stderr
        assert not (dc / "latest").exists()
        auth = ["--username", "downstream", "--password-file", pwfile]
        for kind, dest, export in (("concelier", dc, c1), ("excititor", dx, x1)):
            res = run_cli(*sync_args(up.base, dest, kind, key, state, *auth))
            assert res.returncode == 0, res.stderr
            assert_serves(dest, export, key)
            assert "s3cret-pw" not in res.stderr
        # A no-op, then a new export upstream.
        res = run_cli(*sync_args(up.base, dc, "concelier", key, state, *auth))
        assert res.returncode == 0 and history(state)[0]["outcome"] == "unchanged"
        c2 = publish_concelier(croot, signing_key, {"primary": [advisory("CVE-3")], "community": [advisory("CVE-2")]},
                               "c2")
        # An interrupted download of c2's bundle waits in the partial directory: it is resumed with Range.
        bundle = c2 / "mirror" / "primary" / "bundle.json"
        data = bundle.read_bytes()
        want = Want("mirror/primary/bundle.json", len(data), "sha256:" + hashlib.sha256(data).hexdigest())
        (dc / ".sync-partial").mkdir()
        (dc / ".sync-partial" / partial_name(want)).write_bytes(data[:300])
        res = run_cli(*sync_args(up.base, dc, "concelier", key, state, *auth, "--log", "rich"))
        assert res.returncode == 0, res.stderr
        assert "published" in res.stderr and "c2" in res.stderr  # the terminal rendering, forced
        assert_serves(dc, c2, key)
        assert not (dc / ".sync-partial").exists()
        time.sleep(1.2)  # the access log is flushed about once a second
        fetched = [json.loads(line) for line in up.access_lines()]
        bundles = [r for r in fetched
                   if r["path"].endswith("/mirror/primary/bundle.json") and r.get("exportId") == "c2"]
        assert [(r["status"], r["bytes"]) for r in bundles] == [(206, len(data) - 300)], bundles
        assert all("s3cret" not in json.dumps(r) for r in history(state))

        # A second serve on the synced trees answers byte-identically (bodies and ETags).
        down_env = basic_env(dc, dx, htfile)
        client = httpx.Client(auth=("downstream", "s3cret-pw"), headers={"Accept-Encoding": "identity"})
        with running(tmp_path / "down", env=down_env) as down, client as c:
            for route in ROUTES:
                a, b = c.get(up.url(route)), c.get(down.url(route))
                assert a.status_code == b.status_code == 200, route
                assert a.content == b.content, route
                assert a.headers["etag"] == b.headers["etag"], route


def test_upstream_bearer_tokens_refreshed_across_expiry(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    issuer = TokenIssuer(audience="stella-mirror")
    croot, xroot = tmp_path / "up-c", tmp_path / "up-x"
    publish_concelier(croot, signing_key, {"primary": [advisory("CVE-1")]}, "c1")
    publish_excititor(xroot, signing_key, {"primary": {"k1": [{"v": 1}]}}, "x1")
    (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks()))
    secret = tmp_path / "concelier-authority-client"
    secret.write_text("client-s3cret\n")
    env = upstream_env(croot, xroot, AUTHORITY__ISSUER=issuer.issuer, AUTHORITY__AUDIENCES__0=issuer.audience,
                       AUTHORITY__JWKSFILE=str(tmp_path / "jwks.json"), AUTHORITY__LEEWAYSECONDS="0")
    key, state, dest = keydir / "mirror-key.pub", tmp_path / "state", tmp_path / "down-c"
    lifetime = 4
    with running(tmp_path / "up", env=env) as up, token_endpoint(issuer, "mirror-sync", "client-s3cret",
                                                                 lifetime) as tokens:
        oauth = ["--token-url", tokens.url, "--client-id", "mirror-sync", "--client-secret-file", secret]
        res = run_cli(*sync_args(up.base, tmp_path / "down-x", "excititor", key, state, *oauth, "--scope",
                                 "excititor.mirror.read"))
        assert res.returncode == 0, res.stderr
        # --watch polling every 0.5 s across several token lifetimes; two new exports appear meanwhile.
        args = [*sync_args(up.base, dest, "concelier", key, state, *oauth, "--scope", "concelier.mirror.read"),
                "--watch", "--poll", "0.5"]
        with (tmp_path / "watch.log").open("w") as log:
            proc = subprocess.Popen([*CLI, *map(str, args)], stdout=log, stderr=log)
        try:
            for n, export_id in ((2, "c2"), (3, "c3")):
                deadline = time.monotonic() + 60
                while not ((dest / "latest").is_symlink() and (dest / "latest").resolve().name == f"c{n - 1}"):
                    assert time.monotonic() < deadline, (tmp_path / "watch.log").read_text()
                    time.sleep(0.2)
                time.sleep(lifetime + 0.5)  # the token the watcher holds has expired by now
                export = publish_concelier(croot, signing_key, {"primary": [advisory(f"CVE-{n}")]}, export_id)
            deadline = time.monotonic() + 60
            while not ((dest / "latest").is_symlink() and (dest / "latest").resolve().name == "c3"):
                assert time.monotonic() < deadline, (tmp_path / "watch.log").read_text()
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(30)
        assert_serves(dest, export, key)
        assert len(tokens.grants) >= 4, "tokens were fetched again as they expired"
        assert tokens.refused == 0
        time.sleep(1.2)  # the access log is flushed about once a second
        statuses = [json.loads(line)["status"] for line in up.access_lines()]
        assert len(statuses) > 10 and 304 in statuses, "the watcher polled with conditional requests"
        assert 401 not in statuses and 403 not in statuses, "every token was refreshed before it expired"
        assert "client-s3cret" not in (tmp_path / "watch.log").read_text()
