"""Issue 19, checks that match reality: the TLS files a process loads are loaded by its checks first — ``serve``
and ``config check`` (when serve terminates TLS), ``gateway render`` (every domain's, for nginx) — with
certificates made by real openssl; certificates expiring within 30 days and a missing export root are reported at
start (runbook §7's line)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clitools import cli
from serverproc import CLI, hermetic_env, running

pytestmark = pytest.mark.e2e


def openssl_pair(directory: Path, name: str, host: str, days: int = 90) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", str(days), "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=DNS:{host}"], check=True, capture_output=True)
    return crt, key


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=hermetic_env(env), capture_output=True, text=True, timeout=30)


def _error(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("error "))


def test_a_key_that_is_not_its_certificates_stops_config_check_and_serve(tmp_path: Path) -> None:
    crt, _ = openssl_pair(tmp_path, "default", "localhost")
    _, other_key = openssl_pair(tmp_path, "other", "localhost")
    env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path),
           "MIRROR__TLS__CERTFILE": str(crt), "MIRROR__TLS__KEYFILE": str(other_key)}
    check, serve = _run(["config", "check"], env), _run(["serve", "--port", "0"], env)
    expected = f"error [config] mirror.tls.keyFile: {other_key}: does not match the certificate {crt}"
    assert check.returncode == serve.returncode == 3, check.stderr + serve.stderr
    assert _error(check.stderr) == _error(serve.stderr) == expected
    assert check.stdout == "" and "Traceback" not in check.stderr + serve.stderr


def test_gateway_render_loads_every_domain_key_before_writing(tmp_path: Path) -> None:
    """The misspelt key file of the issue: ``gateway render`` refuses it by key; ``config check`` passes (serve
    speaks plain HTTP behind a TLS-terminating gateway and never loads it) — the gateway's check is render's."""
    crt, key = openssl_pair(tmp_path, "mirror-primary", "mirror-primary.example")
    env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path),
           "MIRROR__GATEWAY__TERMINATETLS": "true", "MIRROR__DOMAINS__0__ID": "primary",
           "MIRROR__DOMAINS__0__HOSTNAMES__0": "mirror-primary.example",
           "MIRROR__DOMAINS__0__TLS__CERTFILE": str(crt), "MIRROR__DOMAINS__0__TLS__KEYFILE": str(key) + "y",
           "CONCELIER__MIRROR__DOMAINS__0__ID": "primary"}
    out = tmp_path / "gw"
    render = _run(["gateway", "render", "--out", str(out)], env)
    assert render.returncode == 3, render.stderr
    assert _error(render.stderr) == (f"error [config] mirror.domains.0.tls.keyFile: {key}y: cannot read key: "
                                     "No such file or directory")
    assert not (out / "nginx.conf").exists()
    assert _run(["config", "check"], env).returncode == 0
    # Right key, certificate for another host: refused too; right files: written.
    other_crt, other_key = openssl_pair(tmp_path, "other", "other.example")
    render = _run(["gateway", "render", "--out", str(out)], env | {"MIRROR__DOMAINS__0__TLS__CERTFILE": str(other_crt),
                                                                   "MIRROR__DOMAINS__0__TLS__KEYFILE": str(other_key)})
    assert render.returncode == 3
    assert _error(render.stderr).startswith(f"error [config] mirror.domains.0.tls.certFile: {other_crt}: does not "
                                            "cover host mirror-primary.example")
    render = _run(["gateway", "render", "--out", str(out)], env | {"MIRROR__DOMAINS__0__TLS__KEYFILE": str(key)})
    assert render.returncode == 0 and (out / "nginx.conf").is_file(), render.stderr


def test_expiring_certificate_and_missing_export_root_are_reported_at_start(tmp_path: Path) -> None:
    crt, key = openssl_pair(tmp_path, "default", "localhost", days=7)
    env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "no" / "such"),
           "MIRROR__TLS__CERTFILE": str(crt), "MIRROR__TLS__KEYFILE": str(key)}
    check = _run(["config", "check"], env)
    assert check.returncode == 0, check.stderr
    assert f"warning: certificate mirror.tls.certFile {crt}: expires on " in check.stderr
    assert "within 30 days: renew it" in check.stderr
    assert (f"warning: concelier: Mirror export root is not configured: concelier.mirror.exportRoot "
            f"{tmp_path / 'no' / 'such'} is not a directory") in check.stderr
    with running(tmp_path / "srv", env=env, scheme="https") as sp:
        log = sp.stderr()
    assert f"WARNING [{sp.proc.pid}] stella_mirror.preflight: certificate mirror.tls.certFile {crt}: expires on " in log
    assert (f"ERROR [{sp.proc.pid}] stella_mirror.concelier: Mirror export root is not configured: "
            f"concelier.mirror.exportRoot {tmp_path / 'no' / 'such'} is not a directory") in log


def test_render_cli_stays_thin() -> None:
    """``gateway render --help`` says what it checks (the operator's first look)."""
    res = cli("gateway", "render", "--help")
    assert res.returncode == 0 and "certificate and key are loaded first" in " ".join(res.stdout.split())
