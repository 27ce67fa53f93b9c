"""``config check`` loads exactly what ``serve`` loads — files included — and fails the same way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serverproc import CLI, hermetic_env

pytestmark = pytest.mark.e2e


def _both(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    check = subprocess.run([*CLI, "config", "check"], env=hermetic_env(env), capture_output=True, text=True,
                           timeout=30)
    serve = subprocess.run([*CLI, "serve", "--port", "0"], env=hermetic_env(env), capture_output=True, text=True,
                           timeout=30)
    return check, serve


def _error_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("error "))


@pytest.mark.parametrize("case", ["jwks-file", "jwks-missing", "htpasswd", "certificate", "access-log"])
def test_config_check_fails_like_serve(tmp_path: Path, case: str) -> None:
    env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path)}
    if case == "jwks-file":  # the shipped compose env failed this way while config check passed
        env |= {"AUTHORITY__ISSUER": "https://authority.test", "AUTHORITY__AUDIENCES__0": "mirror",
                "AUTHORITY__JWKSFILE": str(tmp_path / "authority-jwks.json")}
    elif case == "jwks-missing":  # ... and the Helm env this way
        env |= {"AUTHORITY__ISSUER": "https://authority.test", "AUTHORITY__AUDIENCES__0": "mirror"}
    elif case == "htpasswd":
        env |= {"CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
                "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(tmp_path / "absent.htpasswd")}
    elif case == "certificate":
        (tmp_path / "bad.crt").write_text("not a certificate\n")
        env |= {"MIRROR__TLS__CERTFILE": str(tmp_path / "bad.crt"), "MIRROR__TLS__KEYFILE": str(tmp_path / "bad.crt")}
    else:
        env |= {"MIRROR__ACCESSLOG": str(tmp_path / "no-such-dir" / "access.log")}
    check, serve = _both(env)
    assert check.returncode == 3, check.stdout + check.stderr
    assert serve.returncode == 3, serve.stderr
    assert _error_line(check.stderr) == _error_line(serve.stderr)
    assert "Traceback" not in check.stderr + serve.stderr
    assert check.stdout == ""  # nothing printed as if it were valid
