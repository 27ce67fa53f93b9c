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


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", target, symlinks=True)
    return target


def test_shipped_profiles_are_valid() -> None:
    res = _run()
    assert res.returncode == 0, res.stdout + res.stderr
    for check in ("compose", "gateway", "helm", "systemd"):
        assert f"ok   {check}" in res.stdout


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
