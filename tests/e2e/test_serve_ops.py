"""Operations: readiness and the runbook's log line, configuration errors at start, ``config check``,
authentication and quotas wired into the real server (metrics and access log included), multi-worker metrics.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from serverproc import CLI, hermetic_env, running, start_server
from stella_mirror.bundle.keyfiles import generate_keypair
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e

LINE = "Mirror export root is not configured"


def test_no_export_root_readiness_and_exact_log_line(tmp_path: Path) -> None:
    with running(tmp_path / "srv", env={"CONCELIER__MIRROR__ENABLED": "true",
                                        "EXCITITOR__MIRROR__ENABLED": "false"}) as sp:
        assert httpx.get(sp.url("/healthz")).status_code == 200
        r = httpx.get(sp.url("/readyz"))
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert LINE in r.json()["detail"]
        r = httpx.get(sp.url("/concelier/exports/index.json"))
        assert r.status_code == 503 and LINE in r.json()["detail"]
        log_lines = [line for line in sp.stderr().splitlines() if line.endswith(LINE)]
        assert log_lines, sp.stderr()
        assert log_lines[0].split(": ", 1)[1] == LINE  # the message is exactly the runbook's


def test_a_missing_export_root_is_logged_at_start_and_while_requests_arrive(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with running(tmp_path / "srv", env={"CONCELIER__MIRROR__EXPORTROOT": str(missing),
                                        "EXCITITOR__MIRROR__ENABLED": "false"}) as sp:

        def lines() -> list[str]:
            return [line for line in sp.stderr().splitlines() if line.split(": ", 1)[-1] == LINE]

        at_start = len(lines())
        assert at_start >= 1 and str(missing) in sp.stderr(), sp.stderr()
        r = httpx.get(sp.url("/concelier/exports/index.json"))
        assert r.status_code == 503
        deadline = time.monotonic() + 5
        while len(lines()) <= at_start:  # logged again now that requests arrive (then at most once a minute)
            assert time.monotonic() < deadline, sp.stderr()
            time.sleep(0.1)
        for _ in range(5):
            httpx.get(sp.url("/concelier/exports/index.json"))
        time.sleep(0.3)
        assert len(lines()) == at_start + 1


def test_readiness_follows_the_export(tmp_path: Path) -> None:
    root = tmp_path / "concelier"
    root.mkdir()
    with running(tmp_path / "srv", env={"CONCELIER__MIRROR__EXPORTROOT": str(root),
                                        "EXCITITOR__MIRROR__ENABLED": "false"}) as sp:
        r = httpx.get(sp.url("/readyz"))
        assert r.status_code == 503 and "nothing is published" in r.json()["detail"]
        key = generate_keypair(tmp_path / "keys")
        export = publish_concelier(root, key, {"primary": [advisory("CVE-2024-1")]}, "e1")
        assert httpx.get(sp.url("/readyz")).status_code == 200
        (export / "mirror" / "index.json").write_text("{not json")
        r = httpx.get(sp.url("/readyz"))
        assert r.status_code == 503 and "not valid JSON" in r.json()["detail"]
        assert httpx.get(sp.url("/healthz")).status_code == 200


@pytest.mark.parametrize(("env", "key_path"), [
    ({"CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
      "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "many"},
     "concelier.mirror.domains.0.maxDownloadRequestsPerHour"),
    ({"MIRROR__QUOTAS__BACKEND": "redis"}, "mirror.quotas"),
    ({"AUTHORITY__CLIENTSECRET": "do-not-print-me"}, "authority.clientsecret"),
])
def test_invalid_configuration_fails_at_start_with_key_path(tmp_path: Path, env: dict[str, str],
                                                            key_path: str) -> None:
    proc = subprocess.run([*CLI, "serve", "--port", "0"], env=hermetic_env(env), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 3, proc.stderr
    assert key_path in proc.stderr
    assert "do-not-print-me" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_bad_htpasswd_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.htpasswd"
    bad.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    proc = subprocess.run([*CLI, "serve", "--port", "0"], capture_output=True, text=True, timeout=30,
                          env=hermetic_env({"CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
                                            "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(bad)}))
    assert proc.returncode == 3, proc.stderr
    assert str(bad) in proc.stderr and "Traceback" not in proc.stderr


def test_config_check_prints_effective_config_redacted(tmp_path: Path) -> None:
    cfg = tmp_path / "mirror.yaml"
    cfg.write_text("concelier:\n  mirror:\n    exportRoot: /from/file\n    domains:\n      - id: primary\n")
    secret = tmp_path / "client"
    secret.write_text("the-client-secret")
    env = hermetic_env({"CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "42",
                        "MIRROR__QUOTAS__BACKEND": "redis", "MIRROR__QUOTAS__REDISURL": "redis://:hunter2@r:6379",
                        "AUTHORITY__CLIENTSECRETFILE": str(secret), "CONCELIER__MIRROR__EXPORTROOTT": "/typo"})
    proc = subprocess.run([*CLI, "config", "check", "--config", str(cfg)], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 3 and "CONCELIER__MIRROR__EXPORTROOTT: matches no setting" in proc.stderr  # a typo
    env["STELLA_MIRROR_IGNORE_ENV"] = "CONCELIER__MIRROR__EXPORTROOTT"  # ... or, said so, someone else's variable
    proc = subprocess.run([*CLI, "config", "check", "--config", str(cfg), "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["concelier"]["mirror"]["exportRoot"] == "/from/file"
    assert data["concelier"]["mirror"]["domains"][0]["maxDownloadRequestsPerHour"] == 42
    assert data["mirror"]["quotas"]["redisUrl"] == "redis://***@r:6379"
    assert data["authority"]["clientSecretPresent"] is True
    assert "hunter2" not in proc.stdout and "the-client-secret" not in proc.stdout
    assert "concelier.mirror.exportroott" in proc.stderr  # still reported
    proc = subprocess.run([*CLI, "config", "check", "--config", str(cfg)], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "exportRoot: /from/file" in proc.stdout


def _htpasswd(path: Path, user: str, password: str, create: bool = True) -> None:
    args = ["htpasswd", "-B", "-b"] + (["-c"] if create else []) + [str(path), user, password]
    subprocess.run(args, check=True, capture_output=True)


def test_auth_and_quotas_wired_with_metrics_and_access_log(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(tmp_path / "c", key, {"primary": [advisory("CVE-2024-1")], "community": [advisory("X-1")]},
                      "e1")
    publish_excititor(tmp_path / "x", key, {"community": {"consensus": [{"v": 1}]}}, "x1")
    primary, community = tmp_path / "primary.htpasswd", tmp_path / "community.htpasswd"
    _htpasswd(primary, "alice", "alice-pw")
    _htpasswd(community, "bob", "bob-pw")
    env = {
        "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "c"),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(primary),
        "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "3",
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "CONCELIER__MIRROR__DOMAINS__1__HTPASSWD": str(community),
        "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": str(tmp_path / "x"),
        "EXCITITOR__MIRROR__DOMAINS__0__ID": "community",
        "EXCITITOR__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "EXCITITOR__MIRROR__DOMAINS__0__HTPASSWD": str(community),
    }
    with running(tmp_path / "srv", env=env) as sp, httpx.Client(base_url=sp.base) as c:
        url = "/concelier/exports/mirror/primary/bundle.json"
        r = c.get(url)
        assert r.status_code == 401 and 'Basic realm="primary"' in r.headers["www-authenticate"]
        assert c.get(url, auth=("alice", "wrong")).status_code == 401
        assert c.get(url, auth=("bob", "bob-pw")).status_code == 401  # another domain's credential
        assert c.get("/excititor/mirror/community/index", auth=("alice", "alice-pw")).status_code == 401
        assert c.get("/excititor/mirror/community/index", auth=("bob", "bob-pw")).status_code == 200
        for i in range(3):
            r = c.get(url, auth=("alice", "alice-pw"))
            assert r.status_code == 200, r.text
            assert r.headers["ratelimit-limit"] == "3" and r.headers["ratelimit-remaining"] == str(2 - i)
            assert r.headers["cache-control"] == "max-age=300, must-revalidate"  # never `public` here
            assert "Authorization" in r.headers["vary"]
        r = c.get(url, auth=("alice", "alice-pw"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert r.headers["cache-control"] == "no-store"
        # Anonymous access to an open domain still works; the manifest is in the index budget (unlimited).
        assert c.get("/concelier/exports/mirror/community/manifest.json").status_code == 200
        text = c.get("/metrics").text
        assert 'stella_mirror_auth_failures_total{domain="primary",product="concelier",reason=' in text
        assert 'stella_mirror_quota_rejections_total{budget="download",domain="primary",product="concelier"} 1.0' \
            in text
        assert 'route="concelier.bundle",status="429"} 1.0' in text
        time.sleep(1.2)  # access log flush interval
        records = [json.loads(line) for line in sp.access_lines()]
        ok = [r for r in records if r["route"] == "concelier.bundle" and r["status"] == 200]
        assert ok and all(r["principal"] == "alice" and r["auth"] == "basic" for r in ok)
        assert all("alice-pw" not in line and "YWxpY2U6" not in line for line in sp.access_lines())
        assert ok[-1]["quotaRemaining"] == 0


def test_metrics_sum_over_workers(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(tmp_path / "c", key, {"primary": [advisory("CVE-2024-1")]}, "e1")
    sp = start_server(tmp_path / "srv", env={"CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "c"),
                                             "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
                                             "EXCITITOR__MIRROR__ENABLED": "false"}, args=["--workers", "2"])
    try:
        n = 200
        for _ in range(n):  # new connection each time: the kernel spreads them over both workers
            assert httpx.get(sp.url("/concelier/exports/index.json")).status_code == 200
        time.sleep(1.5)  # one snapshot interval
        text = httpx.get(sp.url("/metrics")).text
        line = next(x for x in text.splitlines()
                    if x.startswith("stella_mirror_requests_total") and 'route="concelier.index"' in x)
        assert float(line.rsplit(" ", 1)[1]) == n
        pids = {json.loads(x)["requestId"].split("-")[0] for x in sp.access_lines()}
        assert len(pids) == 2, "both workers answered"
    finally:
        sp.stop()


def test_service_selection_and_compress_command(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    cexport = publish_concelier(tmp_path / "c", key, {"primary": [advisory(f"CVE-2024-{i}") for i in range(40)]},
                                "e1")
    publish_excititor(tmp_path / "x", key, {"community": {"consensus": [{"v": 1}]}}, "x1")
    # The export wrote a signed .zst beside its bundle; `compress` would rewrite it at another level (and make
    # its listed digest wrong), so it refuses such an export. On a tree without signed variants it writes
    # .zst/.gz beside JSON payloads of at least --min-size bytes (publisher side).
    assert (cexport / "mirror" / "primary" / "bundle.json.zst").is_file()
    proc = subprocess.run([*CLI, "compress", str(cexport), "--min-size", "1"], env=hermetic_env({}),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "lists signed .zst variants" in proc.stderr, proc.stderr
    plain = tmp_path / "plain"
    (plain / "mirror").mkdir(parents=True)
    (plain / "mirror" / "index.json").write_bytes(json.dumps({"exportId": "old", "domains": ["x" * 40] * 50}).encode())
    (plain / "mirror" / "index.json.jws").write_bytes(b"x")
    proc = subprocess.run([*CLI, "compress", str(plain), "--min-size", "1"], env=hermetic_env({}),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (plain / "mirror" / "index.json.gz").is_file()
    assert not (plain / "mirror" / "index.json.jws.gz").exists()
    env = {"CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "c"), "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
           "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": str(tmp_path / "x"),
           "EXCITITOR__MIRROR__DOMAINS__0__ID": "community"}
    with running(tmp_path / "only-excititor", env=env, args=["--service", "excititor"]) as sp:
        assert httpx.get(sp.url("/concelier/exports/index.json")).status_code == 404
        assert httpx.get(sp.url("/excititor/mirror/community/index")).status_code == 200
        assert httpx.get(sp.url("/readyz")).status_code == 200
    with running(tmp_path / "only-concelier", env=env, args=["--service", "concelier"]) as sp:
        r = httpx.get(sp.url("/concelier/exports/mirror/primary/bundle.json"), headers={"Accept-Encoding": "zstd"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "zstd"
        assert httpx.get(sp.url("/excititor/mirror/domains")).status_code == 404


def test_the_product_index_counts_against_the_domain_whose_index_it_serves(tmp_path: Path) -> None:
    """No host names: an anonymous caller may read only community, so /concelier/exports/index.json is
    community's own signed index — and counts against community's index budget, like its own URL."""
    root = tmp_path / "concelier"
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(root, key, {"primary": [advisory("CVE-2024-1")], "community": [advisory("X-1")]}, "e1")
    primary = tmp_path / "primary.htpasswd"
    _htpasswd(primary, "alice", "alice-pw")
    env = {
        "CONCELIER__MIRROR__EXPORTROOT": str(root),
        "CONCELIER__MIRROR__MAXINDEXREQUESTSPERHOUR": "100",
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(primary),
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "CONCELIER__MIRROR__DOMAINS__1__MAXINDEXREQUESTSPERHOUR": "3",
        "EXCITITOR__MIRROR__ENABLED": "false",
    }
    with running(tmp_path / "srv", env=env) as sp, httpx.Client(base_url=sp.base) as c:
        wide = c.get("/concelier/exports/index.json")
        assert wide.status_code == 200 and [d["domainId"] for d in wide.json()["domains"]] == ["community"]
        assert wide.headers["ratelimit-limit"] == "3" and wide.headers["ratelimit-remaining"] == "2"
        own = c.get("/concelier/exports/mirror/community/index.json")
        assert own.headers["ratelimit-remaining"] == "1"  # one budget for both routes
        assert c.get("/concelier/exports/index.json").headers["ratelimit-remaining"] == "0"
        refused = c.get("/concelier/exports/index.json")
        assert refused.status_code == 429 and "index request quota of 3" in refused.json()["detail"]
        # Primary's own index is not community's budget.
        assert c.get("/concelier/exports/mirror/primary/index.json", auth=("alice", "alice-pw")).status_code == 200
