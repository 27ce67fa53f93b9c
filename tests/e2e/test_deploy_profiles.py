"""deploy/tools/validate-profiles.sh (runbook §3.1 step 4): the shipped profiles pass, and a copy of the
deploy tree with one thing broken fails with a message naming the broken file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "tools" / "validate-profiles.sh"
COMPOSE = "compose/docker-compose.mirror.yaml"
ENV_EXAMPLE = "compose/env/mirror.env.example"


def _run(deploy: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONCELIER__", "EXCITITOR__",
                                                                              "AUTHORITY__", "MIRROR__"))}
    env["PYTHON"] = sys.executable
    args = [str(SCRIPT)] if deploy is None else [str(deploy / "tools" / "validate-profiles.sh"), str(deploy)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


def populate(deploy: Path) -> None:
    """Runbook §2 as an operator does it: certificates, htpasswd files (htpasswd -B), the client secret."""
    compose = deploy / "compose"
    for d in ("mirror-gateway/tls", "mirror-gateway/secrets", "mirror-secrets"):
        (compose / d).mkdir(parents=True, exist_ok=True)
    for domain in ("primary", "community"):
        tls = compose / "mirror-gateway" / "tls"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "90", "-subj", f"/CN=mirror-{domain}.stella-ops.org",
                        "-keyout", str(tls / f"mirror-{domain}.key"), "-out", str(tls / f"mirror-{domain}.crt")],
                       check=True, capture_output=True)
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
    assert "is not the rendering of mirror.env.example" in res.stderr


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
    assert "concelier.mirror.domains.0.maxdownloads matches no setting" in res.stderr


def test_gateway_config_error_is_reported_by_nginx(tmp_path: Path) -> None:
    deploy = _copy(tmp_path)
    conf = deploy / "compose/mirror-gateway/nginx.conf"
    conf.write_text(conf.read_text().replace("proxy_cache_lock on;", "proxy_cache_lock maybe;", 1))
    res = _run(deploy)
    assert res.returncode == 1
    assert "FAIL deploy/compose/mirror-gateway/nginx.conf: nginx -t failed" in res.stderr
    assert "proxy_cache_lock" in res.stderr
    assert "is not the rendering of" in res.stderr  # hand edits are caught too
