"""TLS with a certificate per domain chosen by SNI, and SIGHUP / ``stella-mirror reload`` under load.

While client threads hammer the server over keep-alive TLS connections, the htpasswd file and a domain's
certificate are replaced and the server is told to reload (signal and CLI, with two workers so the
supervisor's forwarding is exercised). No request may fail; afterwards the old password is refused, the
new one accepted, and a TLS handshake for the domain's host name presents the new certificate.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from serverproc import CLI, hermetic_env, start_server
from stella_mirror.bundle.keyfiles import generate_keypair
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e

PRIMARY_HOST = "primary.mirror.test"
COMMUNITY_HOST = "community.mirror.test"


def make_cert(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=DNS:{cn}"], check=True, capture_output=True)
    return crt, key


def served_fingerprint(port: int, server_name: str | None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def fingerprint(crt: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(crt.read_text())).hexdigest()


def htpasswd(path: Path, entries: dict[str, str]) -> None:
    tmp = path.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    for i, (user, password) in enumerate(entries.items()):
        subprocess.run(["htpasswd", "-B", "-b"] + (["-c"] if i == 0 else []) + [str(tmp), user, password],
                       check=True, capture_output=True)
    tmp.replace(path)  # as an operator would: write beside, rename over


def test_sni_certificates_and_reload_under_load(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(tmp_path / "c", key, {"primary": [advisory("CVE-2024-1")], "community": [advisory("X-1")]},
                      "e1")
    tls = tmp_path / "tls"
    tls.mkdir()
    default_crt, default_key = make_cert(tls, "default", "localhost")
    p1_crt, p1_key = make_cert(tls, "p1", PRIMARY_HOST)
    c_crt, c_key = make_cert(tls, "community", COMMUNITY_HOST)
    p2_crt, p2_key = make_cert(tls, "p2", PRIMARY_HOST)  # the renewal, placed later
    live_crt, live_key = tls / "mirror-primary.crt", tls / "mirror-primary.key"
    shutil.copy(p1_crt, live_crt)
    shutil.copy(p1_key, live_key)
    pw = tmp_path / "mirror-primary.htpasswd"
    htpasswd(pw, {"alice": "old-password", "loader": "steady"})
    env = {
        "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "c"),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(pw),
        "CONCELIER__MIRROR__DOMAINS__0__HOSTNAMES__0": PRIMARY_HOST,
        "CONCELIER__MIRROR__DOMAINS__0__TLS__CERTFILE": str(live_crt),
        "CONCELIER__MIRROR__DOMAINS__0__TLS__KEYFILE": str(live_key),
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "CONCELIER__MIRROR__DOMAINS__1__HOSTNAMES__0": COMMUNITY_HOST,
        "CONCELIER__MIRROR__DOMAINS__1__TLS__CERTFILE": str(c_crt),
        "CONCELIER__MIRROR__DOMAINS__1__TLS__KEYFILE": str(c_key),
        "EXCITITOR__MIRROR__ENABLED": "false",
        "MIRROR__TLS__CERTFILE": str(default_crt),
        "MIRROR__TLS__KEYFILE": str(default_key),
    }
    sp = start_server(tmp_path / "srv", env=env, scheme="https", args=["--workers", "2"])
    try:
        port = sp.port
        # SNI picks the domain's certificate; no or an unknown name gets the default one.
        assert served_fingerprint(port, PRIMARY_HOST) == fingerprint(p1_crt)
        assert served_fingerprint(port, COMMUNITY_HOST) == fingerprint(c_crt)
        assert served_fingerprint(port, "other.test") == fingerprint(default_crt)
        assert served_fingerprint(port, None) == fingerprint(default_crt)

        url = "/concelier/exports/mirror/primary/manifest.json"
        headers = {"Host": PRIMARY_HOST}
        with httpx.Client(base_url=sp.base, verify=False, headers=headers) as c:
            assert c.get(url, auth=("alice", "old-password")).status_code == 200
            assert c.get(url).status_code == 401

        stop = threading.Event()
        counts = {"ok": 0}
        failures: list[str] = []
        lock = threading.Lock()

        def load() -> None:
            with httpx.Client(base_url=sp.base, verify=False, headers=headers, timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.get(url, auth=("loader", "steady"))
                        ok = r.status_code == 200
                        detail = f"{r.status_code} {r.text[:120]}"
                    except httpx.HTTPError as exc:
                        ok, detail = False, repr(exc)
                    with lock:
                        if ok:
                            counts["ok"] += 1
                        else:
                            failures.append(detail)

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            # Rotate credentials and the primary certificate, then reload: by signal, then by the CLI.
            htpasswd(pw, {"alice": "new-password", "loader": "steady"})
            shutil.copy(p2_crt, live_crt)
            shutil.copy(p2_key, live_key)
            sp.hup()
            time.sleep(1.0)
            assert sp.pid_file is not None
            out = subprocess.run([*CLI, "reload", "--pid-file", str(sp.pid_file)], env=hermetic_env({}),
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0 and "took the new configuration" in out.stdout, out.stderr
            time.sleep(1.0)
            sp.hup()
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures[:5]
        assert counts["ok"] > 100, counts

        # Every new handshake presents the renewed certificate (both workers: several connections).
        for _ in range(6):
            assert served_fingerprint(port, PRIMARY_HOST) == fingerprint(p2_crt)
        assert served_fingerprint(port, COMMUNITY_HOST) == fingerprint(c_crt)
        for _ in range(6):  # fresh connections spread over both workers
            with httpx.Client(base_url=sp.base, verify=False, headers=headers) as c:
                assert c.get(url, auth=("alice", "old-password")).status_code == 401
                assert c.get(url, auth=("alice", "new-password")).status_code == 200
        text = httpx.get(sp.url("/metrics"), verify=False).text
        assert 'stella_mirror_reloads_total{result="ok"}' in text
        assert sp.stderr().count("configuration reloaded") >= 6  # 3 reloads x 2 workers
    finally:
        sp.stop()


def test_failed_reload_keeps_serving(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(tmp_path / "c", key, {"primary": [advisory("CVE-2024-1")]}, "e1")
    cfg = tmp_path / "mirror.yaml"
    good = f"concelier:\n  mirror:\n    exportRoot: {tmp_path / 'c'}\n    domains:\n      - id: primary\n"
    cfg.write_text(good)
    sp = start_server(tmp_path / "srv", config=cfg, env={"EXCITITOR__MIRROR__ENABLED": "false"})
    try:
        url = "/concelier/exports/mirror/primary/manifest.json"
        assert httpx.get(sp.url(url)).status_code == 200
        cfg.write_text(good + "        maxDownloadRequestsPerHour: -5\n")
        sp.hup()
        deadline = time.monotonic() + 5
        while "reload failed" not in sp.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "concelier.mirror.domains.0.maxDownloadRequestsPerHour" in sp.stderr()
        assert httpx.get(sp.url(url)).status_code == 200
        # A good configuration with a new domain takes effect on the next reload.
        cfg.write_text(good + "      - id: second\n")
        sp.hup()
        deadline = time.monotonic() + 5
        while "generation 1" not in sp.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.get(sp.url("/concelier/exports/mirror/second/manifest.json"))
        assert r.status_code == 404 and r.json()["type"].endswith("/not-found")  # configured now, not exported
    finally:
        sp.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_command_reports_refusal(tmp_path: Path, workers: int) -> None:
    """``stella-mirror reload`` exits 3 with the server's reason when it refuses, 0 when it takes the change."""
    key = generate_keypair(tmp_path / "keys")
    publish_concelier(tmp_path / "c", key, {"primary": [advisory("CVE-2024-1")]}, "e1")
    pw = tmp_path / "primary.htpasswd"
    htpasswd(pw, {"alice": "pw"})
    cfg = tmp_path / "mirror.yaml"
    good = (f"concelier:\n  mirror:\n    exportRoot: {tmp_path / 'c'}\n    domains:\n      - id: primary\n"
            f"        htpasswd: {pw}\n")
    cfg.write_text(good)
    sp = start_server(tmp_path / "srv", config=cfg, env={"EXCITITOR__MIRROR__ENABLED": "false"},
                      args=["--workers", str(workers)])
    try:
        assert sp.pid_file is not None
        reload_cmd = [*CLI, "reload", "--pid-file", str(sp.pid_file)]
        pw.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")  # not bcrypt: refused
        out = subprocess.run(reload_cmd, env=hermetic_env({}), capture_output=True, text=True, timeout=30)
        assert out.returncode == 3, out.stdout + out.stderr
        assert "refused the new configuration" in out.stderr and str(pw) in out.stderr
        assert "W6ph5" not in out.stderr
        url = "/concelier/exports/mirror/primary/manifest.json"
        assert httpx.get(sp.url(url), auth=("alice", "pw")).status_code == 200  # the old file still in force
        htpasswd(pw, {"alice": "pw2"})
        out = subprocess.run(reload_cmd, env=hermetic_env({}), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 5
        while httpx.get(sp.url(url), auth=("alice", "pw2")).status_code != 200:
            assert time.monotonic() < deadline, sp.stderr()
            time.sleep(0.05)
    finally:
        sp.stop()
