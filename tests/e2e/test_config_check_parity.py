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


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUER": "5"},
         "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUER"),
        ({"MIRROR__QUOTAS__BACKEND": "redis", "MIRROR__QUOTAS__REDISURL": "redis://:s3cr@t@127.0.0.1:99999/0"},
         "mirror.quotas.redisUrl"),
        ({"MIRROR__DOMAINS__0__ID": "community", "EXCITITOR__MIRROR__ENABLED": "true",
          "EXCITITOR__MIRROR__DOMAINS__0__ID": "comunity"}, "excititor.mirror.domains.0.id"),
    ],
    ids=["env-typo", "redis-port", "domain-id-typo"],
)
def test_typos_and_bad_urls_stop_config_check_and_serve_with_the_key(tmp_path: Path, extra: dict[str, str],
                                                                      key: str) -> None:
    """Issue 19: an env typo, a bad Redis port and a product domain id missing from mirror.domains are exit 3
    naming the variable or key path — never a warning with exit 0, never a traceback, never the password."""
    env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path),
           "CONCELIER__MIRROR__DOMAINS__0__ID": "community"} | extra
    check, serve = _both(env)
    for res in (check, serve):
        assert res.returncode == 3, res.stdout + res.stderr
        assert _error_line(res.stderr).startswith(f"error [config] {key}: "), res.stderr
        assert "Traceback" not in res.stderr and "s3cr" not in res.stdout + res.stderr
    assert check.stdout == ""


def test_config_check_never_prints_a_redis_password(tmp_path: Path) -> None:
    for url in ("redis://:s3cr@t/pw@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0?password=s3cr@tpw"):
        env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path),
               "MIRROR__QUOTAS__BACKEND": "redis", "MIRROR__QUOTAS__REDISURL": url}
        for fmt in ("yaml", "json"):
            res = subprocess.run([*CLI, "config", "check", "-o", fmt], env=hermetic_env(env), capture_output=True,
                                 text=True, timeout=30)
            assert res.returncode == 0, res.stderr
            assert "127.0.0.1:6379/0" in res.stdout
            assert "s3cr" not in res.stdout + res.stderr and "tpw" not in res.stdout + res.stderr


def test_serve_logs_never_carry_the_redis_password(tmp_path: Path) -> None:
    """Redis down, failMode open: requests are counted by the fail mode and the backend's warnings name Redis by
    host and port only — with a password holding an unencoded ``@`` in the URL."""
    import httpx

    from serverproc import free_port, running

    url = f"redis://:s3cr@t-pw@127.0.0.1:{free_port()}/0"
    env = {"EXCITITOR__MIRROR__ENABLED": "false", "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "root"),
           "CONCELIER__MIRROR__MAXINDEXREQUESTSPERHOUR": "5", "MIRROR__QUOTAS__BACKEND": "redis",
           "MIRROR__QUOTAS__REDISURL": url}
    (tmp_path / "root").mkdir()
    with running(tmp_path / "srv", env=env) as sp:
        for _ in range(3):
            httpx.get(sp.url("/concelier/exports/index.json"), timeout=5)
        log = sp.stderr() + sp.stdout() + "".join(sp.access_lines())
    assert "quota backend redis://127.0.0.1:" in log  # it did try Redis and said so
    assert "s3cr" not in log and "t-pw" not in log
