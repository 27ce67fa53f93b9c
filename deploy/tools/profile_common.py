"""What the profile checks share: the failure list, YAML reading, ``stella-mirror config check`` inside a
container's view of the files, ``nginx -t`` on a gateway configuration inside its container's view, and the
certificate checks. Used by validate_profiles.py (compose, systemd) and profile_helm.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from stella_mirror.config import MirrorConfig
from stella_mirror.ops.containers import local_env, local_path
from stella_mirror.preflight import tls_findings

OUR_PREFIXES = ("CONCELIER__", "EXCITITOR__", "AUTHORITY__", "MIRROR__")
EXPORT_ROOT_KEYS = ("CONCELIER__MIRROR__EXPORTROOT", "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT",
                    "EXCITITOR__MIRROR__EXPORTROOT")
"""Pointed at temp directories for ``config check`` (which does not read them): their mounts are checked apart."""
RUNTIME_KEYS = ("MIRROR__PIDFILE", "MIRROR__ACCESSLOG")
"""Written by the server at run time (tmpfs or emptyDir in the containers): pointed at temp paths for the check."""
CLI = [sys.executable, "-c", "from stella_mirror.cli.main import main; main()"]


class Failures:
    """Collected failures: every check runs, then the script exits non-zero if any failed."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.items: list[str] = []

    def name(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.base))
        except ValueError:
            return str(path)

    def fail(self, path: Path, message: str) -> None:
        line = f"FAIL {self.name(path)}: {message}"
        self.items.append(line)
        print(line, file=sys.stderr)


def load_yaml(path: Path, out: Failures) -> Any:
    """The parsed YAML document, or None after recording why it could not be read."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        out.fail(path, f"cannot read: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        out.fail(path, f"not valid YAML{where}")
    return None


def our_env(env: Mapping[str, str]) -> dict[str, str]:
    """The process environment without our own sections, plus ``env``: what a container with ``env`` sees."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(OUR_PREFIXES)}
    base.pop("STELLA_MIRROR_CONFIG", None)
    return {**base, **env}


def config_check(env: Mapping[str, str], where: Path, label: str, out: Failures, tmp: Path,
                 mounts: Mapping[str, Path]) -> None:
    """``stella-mirror config check`` with exactly ``env`` — which loads every file ``serve`` loads — where the
    container's paths are read through ``mounts`` (container path -> local directory); a path on no mount stays
    as written, so a file the container would not have is reported. Export roots and run-time files point at
    temp paths."""
    full = our_env(local_env(env, mounts))
    run = tmp / "run"
    run.mkdir(parents=True, exist_ok=True)
    for key in RUNTIME_KEYS:
        if env.get(key, "").startswith("/"):
            full[key] = str(run / Path(env[key]).name)
    roots = tmp / "roots" / re.sub(r"\W+", "-", label)
    for key in EXPORT_ROOT_KEYS:
        if full.get(key):
            full[key] = str(roots / key.lower())
            Path(full[key]).mkdir(parents=True, exist_ok=True)
    res = subprocess.run([*CLI, "config", "check", "--output", "json"], env=full, capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        for container_path, local in sorted(mounts.items(), key=lambda kv: -len(str(kv[1]))):
            detail = detail.replace(str(local), container_path)
        out.fail(where, f"{label}: stella-mirror config check refused it: {detail}")
        return
    for line in res.stderr.splitlines():
        if "warning: environment key" in line:
            out.fail(where, f"{label}: {line.removeprefix('warning: ')}")


def self_signed(cert: Path, key: Path, names: list[str], days: int = 90) -> None:
    """A throwaway certificate for ``names`` (stand-in where the real one lives in a cluster secret)."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", str(days), "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)], capture_output=True, check=True)


def stand_in_htpasswd() -> bytes:
    """A valid bcrypt htpasswd line, as ``htpasswd -B`` writes it."""
    hashed = bcrypt.hashpw(b"validator", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    return f"validator:{hashed}\n".encode()


def check_certificates(config: MirrorConfig, mounts: Mapping[str, Path], where: Path, label: str,
                       out: Failures) -> None:
    """Every domain's certificate and key as the gateway loads them (read through ``mounts``): both readable, the
    key the certificate's, the certificate covering the domain's host names and not expiring within 30 days — the
    checks of ``gateway render`` (stella_mirror.preflight), with expiry a failure here. Reports name the local file,
    the configuration key and the file as the configuration writes it."""

    def resolve(path: Path) -> Path | None:
        local = local_path(str(path), mounts)
        return local if local is not None and local.is_file() else None

    for finding in tls_findings(config, "gateway", resolve):
        local = resolve(finding.file)
        out.fail(local or where, f"{label}: {finding}")


def nginx_test(text: str, mounts: Mapping[str, Path], where: Path, label: str, out: Failures, tmp: Path) -> None:
    """``nginx -t`` on ``text`` as the gateway container would load it: certificate, key and htpasswd paths read
    through ``mounts`` — the real files, no stand-ins: a missing certificate or key fails nginx -t as it would fail
    the gateway (a missing htpasswd file is reported apart: nginx reads it only per request) —, cache, pid and logs
    under a temp prefix, upstream host names (resolvable only in the deployment's network) on loopback."""
    nginx = shutil.which(os.environ.get("NGINX", "nginx")) or shutil.which("/usr/sbin/nginx")
    if nginx is None:
        out.fail(where, f"{label}: nginx not found (install nginx or set NGINX) — cannot run nginx -t")
        return
    prefix = tmp / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)

    def cert(match: re.Match[str]) -> str:
        directive, original = match.group(1), match.group(2)
        local = local_path(original, mounts)
        return f"{directive} {local or original};"

    def htpasswd(match: re.Match[str]) -> str:
        original = match.group(1)
        local = local_path(original, mounts)
        if local is None or not local.is_file():
            out.fail(where, f"{label}: auth_basic_user_file {original} is not provided by the gateway's volumes")
        return f"auth_basic_user_file {local or original};"

    rewrites: list[tuple[str, Any]] = [
        (r"(?m)^\s*user\s+[^;]+;", ""),  # dropping privileges needs that user to exist here
        (r"\b(ssl_certificate_key|ssl_certificate)\s+([^;\s]+)\s*;", cert),
        (r"auth_basic_user_file\s+([^;\s]+)\s*;", htpasswd),
        (r"proxy_cache_path\s+\S+", f"proxy_cache_path {prefix / 'cache'}"),
        (r"(?m)^(\s*)pid\s+[^;]+;", rf"\g<1>pid {prefix / 'nginx.pid'};"),
        (r"\b(access_log|error_log)\s+/[^;\s]+", rf"\g<1> {prefix / 'logs' / 'log'}"),
        (r"\bserver\s+[A-Za-z][\w.-]*:(\d+)", r"server 127.0.0.1:\1"),
    ]
    copy = text
    for pattern, repl in rewrites:
        copy = re.sub(pattern, repl, copy)
    conf = prefix / "nginx.conf"
    conf.write_text(copy, encoding="utf-8")
    res = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-p", f"{prefix}/", "-c", str(conf)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        detail = " | ".join(line.strip() for line in res.stderr.splitlines() if line.strip())
        detail = detail.replace(str(conf), "nginx.conf")
        for container_path, local in sorted(mounts.items(), key=lambda kv: -len(str(kv[1]))):
            detail = detail.replace(str(local), container_path)  # the paths as the configuration writes them
        out.fail(where, f"{label}: nginx -t failed: {detail}")
