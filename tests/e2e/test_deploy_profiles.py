"""deploy/tools/validate-profiles.sh (runbook §3.1 step 4): the shipped profiles pass, and a copy of the
deploy tree with one thing broken fails with a message naming the broken file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "tools" / "validate-profiles.sh"
COMPOSE = "compose/docker-compose.mirror.yaml"
ENV_EXAMPLE = "compose/env/mirror.env.example"
VALUES = "helm/stellaops/values-mirror.yaml"


def _run(deploy: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONCELIER__", "EXCITITOR__",
                                                                              "AUTHORITY__", "MIRROR__"))}
    env["PYTHON"] = sys.executable
    args = [str(SCRIPT)] if deploy is None else [str(deploy / "tools" / "validate-profiles.sh"), str(deploy)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, check=False)


def certificate(tls: Path, name: str, host: str, days: int = 90) -> None:
    """``<name>.crt`` / ``<name>.key`` for ``host`` (in subjectAltName, where clients look), with real openssl."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", str(days), "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                    "-keyout", str(tls / f"{name}.key"), "-out", str(tls / f"{name}.crt")],
                   check=True, capture_output=True)


def expired_certificate(tls: Path, name: str, host: str) -> None:
    """An expired certificate for ``host`` (openssl 3.0's req cannot date one in the past: cryptography signs it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=90))
            .not_valid_after(now - timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    (tls / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))


def populate(deploy: Path) -> None:
    """Runbook §2 as an operator does it: certificates, htpasswd files (htpasswd -B), the client secret."""
    compose = deploy / "compose"
    for d in ("mirror-gateway/tls", "mirror-gateway/secrets", "mirror-secrets"):
        (compose / d).mkdir(parents=True, exist_ok=True)
    for domain in ("primary", "community"):
        certificate(compose / "mirror-gateway" / "tls", f"mirror-{domain}", f"mirror-{domain}.stella-ops.org")
        subprocess.run(["htpasswd", "-B", "-b", "-c", str(compose / "mirror-gateway" / "secrets" /
                                                        f"mirror-{domain}.htpasswd"), f"{domain}-user", "pw"],
                       check=True, capture_output=True)
    (compose / "mirror-secrets" / "concelier-authority-client").write_text("client-secret\n")


def _copy(tmp_path: Path, populated: bool = True) -> Path:
    target = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", target, symlinks=True)
    if populated:
        populate(target)
    return target


def test_shipped_profiles_are_valid_once_populated(tmp_path: Path) -> None:
    res = _run(_copy(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    for check in ("compose", "gateway", "helm", "systemd"):
        assert f"ok   {check}" in res.stdout


def test_unreadable_referenced_file_is_refused(tmp_path: Path) -> None:
    res = _run(_copy(tmp_path, populated=False))  # a fresh checkout: runbook §2 not done yet
    assert res.returncode == 1
    assert "mirror-gateway/secrets/mirror-primary.htpasswd: cannot read htpasswd file" in res.stderr


def test_non_bcrypt_htpasswd_line_is_refused(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    with (deploy / "compose/mirror-gateway/secrets/mirror-community.htpasswd").open("a") as fh:
        fh.write("mallory:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    res = _run(deploy)
    assert res.returncode == 1
    assert "mirror-community.htpasswd:2: user 'mallory' has an unsalted SHA-1" in res.stderr


def test_gateway_and_configuration_must_name_the_same_domains(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    conf = deploy / "compose/mirror-gateway/nginx.conf"
    conf.write_text(conf.read_text().replace("server_name mirror-community.stella-ops.org;",
                                             "server_name mirror-extra.stella-ops.org;"))
    res = _run(deploy)
    assert res.returncode == 1
    assert "server_name mirror-extra.stella-ops.org: no domain of mirror.env.example has this host name" in res.stderr
    assert "no server for mirror-community.stella-ops.org, a host name of a domain in mirror.env.example" in res.stderr
    assert ("is not the rendering of mirror.env.example: run, in deploy/compose, `set -a; . env/mirror.env.example; "
            "set +a; stella-mirror gateway render --out mirror-gateway`") in res.stderr  # the fix-it that works


def test_writable_export_mount_is_refused(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    compose = deploy / COMPOSE
    text = compose.read_text()
    mount = "        target: /exports/json\n        read_only: true\n"
    assert mount in text
    compose.write_text(text.replace(mount, "        target: /exports/json\n        read_only: false\n"))
    res = _run(deploy)
    assert res.returncode == 1
    assert f"FAIL deploy/{COMPOSE}: services.concelier.volumes: export mount" in res.stderr
    assert "must be read-only" in res.stderr
    assert "services.excititor" not in res.stderr


def test_unknown_env_key_is_refused(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    with (deploy / ENV_EXAMPLE).open("a") as fh:
        fh.write("CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADS=5\n")
    res = _run(deploy)
    assert res.returncode == 1
    assert f"FAIL deploy/{ENV_EXAMPLE}: " in res.stderr
    assert ("stella-mirror config check refused it: error [config] CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADS: "
            "matches no setting (concelier.mirror.domains.0.maxdownloads)") in res.stderr


def test_a_domain_id_missing_from_mirror_domains_is_refused(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    env = deploy / ENV_EXAMPLE
    env.write_text(env.read_text().replace("EXCITITOR__MIRROR__DOMAINS__1__ID=community",
                                           "EXCITITOR__MIRROR__DOMAINS__1__ID=comunity"))
    res = _run(deploy)
    assert res.returncode == 1
    assert (f"FAIL deploy/{ENV_EXAMPLE}: as loaded with set -a: stella-mirror config check refused it: error [config] "
            "excititor.mirror.domains.1.id: domain 'comunity' has no entry in mirror.domains") in res.stderr


def test_gateway_config_error_is_reported_by_nginx(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    conf = deploy / "compose/mirror-gateway/nginx.conf"
    conf.write_text(conf.read_text().replace("proxy_cache_lock on;", "proxy_cache_lock maybe;", 1))
    res = _run(deploy)
    assert res.returncode == 1
    assert "FAIL deploy/compose/mirror-gateway/nginx.conf: services.mirror-gateway: nginx -t failed" in res.stderr
    assert "proxy_cache_lock" in res.stderr
    assert "is not the rendering of" in res.stderr  # hand edits are caught too


def test_broken_compose_file_is_caught_by_the_compose_schema(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    compose = deploy / COMPOSE
    text = compose.read_text()
    redis = '    restart: unless-stopped\n    healthcheck:\n      test: ["CMD", "redis-cli"'
    assert redis in text
    compose.write_text(text.replace(redis, redis.replace("restart:", "restat:")))  # a typo the schema knows
    res = _run(deploy)
    assert res.returncode == 1
    assert f"FAIL deploy/{COMPOSE}: not valid against the Compose specification" in res.stderr
    assert "restat" in res.stderr


def test_certificates_must_cover_their_host_and_outlive_30_days(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    tls = deploy / "compose/mirror-gateway/tls"
    certificate(tls, "mirror-community", "mirror-other.stella-ops.org")
    certificate(tls, "mirror-primary", "mirror-primary.stella-ops.org", days=10)
    res = _run(deploy)
    assert res.returncode == 1
    assert ("FAIL deploy/compose/mirror-gateway/tls/mirror-community.crt: services.mirror-gateway: "
            "mirror.domains.1.tls.certFile /run/mirror-gateway/tls/mirror-community.crt: does not cover host "
            "mirror-community.stella-ops.org (subjectAltName DNS names: mirror-other.stella-ops.org)") in res.stderr
    assert ("FAIL deploy/compose/mirror-gateway/tls/mirror-primary.crt: services.mirror-gateway: "
            "mirror.domains.0.tls.certFile /run/mirror-gateway/tls/mirror-primary.crt: expires on ") in res.stderr
    assert "within 30 days: renew it" in res.stderr
    assert res.stderr.count("FAIL ") == 2, res.stderr


def _certificate_failures(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("FAIL ")]


def test_a_missing_or_mismatched_key_and_an_expired_certificate_fail_by_file_and_key(tmp_path: Path) -> None:
    """Issue 19: the misspelt key file nginx cannot load, a key of another certificate, an expired certificate —
    each named by its file and configuration key, and real nginx -t (no stand-in) fails on the missing key."""
    deploy = _copy(tmp_path)
    env = deploy / ENV_EXAMPLE
    env.write_text(env.read_text().replace("MIRROR__DOMAINS__0__TLS__KEYFILE=/run/mirror-gateway/tls/mirror-primary.key",
                                           "MIRROR__DOMAINS__0__TLS__KEYFILE=/run/mirror-gateway/tls/mirror-primary.kye"))
    conf = deploy / "compose/mirror-gateway/nginx.conf"  # rendered from it, as the runbook says
    conf.write_text(conf.read_text().replace("tls/mirror-primary.key;", "tls/mirror-primary.kye;"))
    res = _run(deploy)
    assert res.returncode == 1
    assert ("FAIL deploy/compose/mirror-gateway/nginx.conf: services.mirror-gateway: mirror.domains.0.tls.keyFile "
            "/run/mirror-gateway/tls/mirror-primary.kye: no such file where it is loaded") in res.stderr
    nginx = next(line for line in res.stderr.splitlines() if "nginx -t failed" in line)
    assert nginx.startswith("FAIL deploy/compose/mirror-gateway/nginx.conf: services.mirror-gateway: nginx -t failed")
    assert 'cannot load certificate key "/run/mirror-gateway/tls/mirror-primary.kye"' in nginx
    assert "is not the rendering" not in res.stderr

    deploy = _copy(tmp_path / "mismatch")
    tls = deploy / "compose/mirror-gateway/tls"
    certificate(tls, "spare", "mirror-primary.stella-ops.org")
    (tls / "spare.key").replace(tls / "mirror-primary.key")
    expired_certificate(tls, "mirror-community", "mirror-community.stella-ops.org")
    res = _run(deploy)
    assert res.returncode == 1
    assert ("FAIL deploy/compose/mirror-gateway/tls/mirror-primary.key: services.mirror-gateway: "
            "mirror.domains.0.tls.keyFile /run/mirror-gateway/tls/mirror-primary.key: does not match the "
            "certificate /run/mirror-gateway/tls/mirror-primary.crt") in res.stderr
    assert ("FAIL deploy/compose/mirror-gateway/tls/mirror-community.crt: services.mirror-gateway: "
            "mirror.domains.1.tls.certFile /run/mirror-gateway/tls/mirror-community.crt: expired on ") in res.stderr


def _edit_values(deploy: Path, edit: Any) -> None:
    path = deploy / VALUES
    values = yaml.safe_load(path.read_text())
    edit(values)
    path.write_text(yaml.safe_dump(values))


def test_helm_values_are_checked_as_rendered(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)

    def edit(values: dict[str, Any]) -> None:
        values["env"]["CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADS"] = "5"  # a key serve rejects
        values["excititor"]["replicas"] = "two"  # not what the Kubernetes API accepts

    _edit_values(deploy, edit)
    res = _run(deploy)
    assert res.returncode == 1
    where = f"FAIL deploy/{VALUES}: "
    assert where + "env: CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADS: matches no setting" in res.stderr
    assert "FAIL deploy/helm/stellaops/templates/mirror-server.yaml: Deployment stellaops-excititor: " \
           "spec.replicas: 'two' is not of type 'integer'" in res.stderr
    assert "ok   compose" in res.stdout


def test_helm_gateway_needs_the_certificates_in_its_volumes(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)

    def edit(values: dict[str, Any]) -> None:
        # A domain whose certificate is not where the chart mounts it (mirror-<domain>.crt|.key).
        values["env"].update({"MIRROR__DOMAINS__2__ID": "partner",
                              "MIRROR__DOMAINS__2__HOSTNAMES__0": "mirror-partner.stella-ops.org",
                              "MIRROR__DOMAINS__2__TLS__CERTFILE": "/run/mirror-gateway/tls/partner.crt",
                              "MIRROR__DOMAINS__2__TLS__KEYFILE": "/run/mirror-gateway/tls/partner.key",
                              "CONCELIER__MIRROR__DOMAINS__2__ID": "partner"})

    _edit_values(deploy, edit)
    res = _run(deploy)
    assert res.returncode == 1
    assert f"FAIL deploy/{VALUES}: stellaops-mirror-gateway/" in res.stderr
    assert "/run/mirror-gateway/tls/partner.crt" in res.stderr


def test_a_failing_helm_template_is_named(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    tpl = deploy / "helm/stellaops/templates/mirror-gateway.yaml"
    tpl.write_text(tpl.read_text() + '{{ required "mirrorGateway.sealed is required" .Values.mirrorGateway.sealed }}\n')
    res = _run(deploy)
    assert res.returncode == 1
    assert "FAIL deploy/helm/stellaops/templates/mirror-gateway.yaml: rendering with values.yaml: " in res.stderr
    assert "mirrorGateway.sealed is required" in res.stderr


def test_populated_secret_directories_are_never_committed() -> None:
    """deploy/compose/.gitignore keeps runbook §2's files out of git; only the READMEs saying what goes there are in."""
    compose = "deploy/compose/"
    secret = ["mirror-secrets/concelier-authority-client", "mirror-gateway/tls/mirror-primary.key",
              "mirror-gateway/tls/mirror-primary.crt", "mirror-gateway/secrets/mirror-primary.htpasswd",
              "env/mirror.env", "mirror-data/concelier/latest", "mirror-keys/mirror-key.pub"]
    kept = ["mirror-secrets/README.md", "mirror-gateway/tls/README.md", "mirror-gateway/secrets/README.md",
            "env/mirror.env.example", "mirror-gateway/nginx.conf"]
    res = subprocess.run(["git", "check-ignore", "--no-index", *[compose + p for p in secret + kept]], cwd=REPO,
                         capture_output=True, text=True, check=False)
    assert res.stdout.split() == [compose + p for p in secret], res.stdout + res.stderr
