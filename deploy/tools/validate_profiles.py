"""Static validation of the mirror deployment profiles (runbook §3.1 step 4, DESIGN S13) — no docker, no helm.

Run through ``deploy/tools/validate-profiles.sh``. Checks, each failure naming its file:

- compose: the required services, the env file, export mounts read-only at the configured export roots,
  secrets read-only at /run/secrets, /readyz healthchecks, the gateway's config/TLS/htpasswd mounts;
- configuration: every environment key of the env example (as each compose service sees it, with the
  service's ``environment`` overrides) and of values-mirror.yaml's env maps is accepted by
  ``stella-mirror config check`` — an unknown key is a failure here, not just a warning;
- gateway: ``nginx -t`` on a copy of the config whose certificates, htpasswd files, cache, pid and upstream
  hosts point into a temp prefix (self-signed certificates generated there), plus the runbook §5 contents;
- Helm: the chart's files exist and parse, values-mirror.yaml names the PVCs and secrets of runbook §1-§2;
- systemd: ``systemd-analyze verify`` on copies whose executables are stubs (a key check without it),
  ``bash -n`` on mirror-sync.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from stella_mirror.errors import ConfigError
from stella_mirror.ops.envfile import read_env_file

OUR_PREFIXES = ("CONCELIER__", "EXCITITOR__", "AUTHORITY__", "MIRROR__")
EXPORT_ROOT_KEYS = ("CONCELIER__MIRROR__EXPORTROOT", "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT",
                    "EXCITITOR__MIRROR__EXPORTROOT")
"""Pointed at temp directories for the check: the real roots exist only inside the containers."""
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


RUNTIME_KEYS = ("MIRROR__PIDFILE", "MIRROR__ACCESSLOG")
"""Written by the server at run time (tmpfs in the containers): pointed at temp paths for the check."""


def _placeholder(path: str, tmp: Path) -> str:
    """A realistic stand-in for a file that lives in a cluster secret (Helm): bcrypt htpasswd, PEM pair."""
    target = tmp / "secrets" / path.lstrip("/")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix in (".crt", ".key"):
            _self_signed(target.with_suffix(".crt"), target.with_suffix(".key"), "placeholder.test")
        elif target.suffix == ".htpasswd":
            hashed = bcrypt.hashpw(b"validator", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
            target.write_text(f"validator:{hashed}\n")
        else:
            target.write_text("placeholder\n")
    return str(target)


def config_check(env: Mapping[str, str], where: Path, label: str, out: Failures, tmp: Path,
                 mounts: Mapping[str, Path] | None = None) -> None:
    """``stella-mirror config check`` with exactly ``env`` — which loads every file ``serve`` loads. Export roots
    and run-time files point at temp paths; other absolute paths are read where the profile puts them: through
    ``mounts`` (container path -> host directory, compose) or, for files held in cluster secrets (Helm, no
    ``mounts``), from generated stand-ins."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(OUR_PREFIXES)}
    base.pop("STELLA_MIRROR_CONFIG", None)
    full = {**base, **env}
    for key, value in env.items():
        if not value.startswith("/") or key in EXPORT_ROOT_KEYS or key.startswith("MIRROR__GATEWAY__"):
            continue
        if key in RUNTIME_KEYS:
            full[key] = str(tmp / "run" / Path(value).name)
            (tmp / "run").mkdir(parents=True, exist_ok=True)
        elif mounts is None:
            full[key] = _placeholder(value, tmp)
        else:
            target = max((t for t in mounts if value == t or value.startswith(t.rstrip("/") + "/")), key=len,
                         default=None)
            if target is not None:
                full[key] = str(mounts[target] / Path(value).relative_to(target))
    roots = tmp / "roots" / re.sub(r"\W+", "-", label)
    for key in EXPORT_ROOT_KEYS:
        if full.get(key):
            full[key] = str(roots / key.lower())
            Path(full[key]).mkdir(parents=True, exist_ok=True)
    res = subprocess.run([*CLI, "config", "check", "--output", "json"], env=full, capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        out.fail(where, f"{label}: stella-mirror config check refused it: {detail}")
        return
    for line in res.stderr.splitlines():
        if "warning: environment key" in line:
            out.fail(where, f"{label}: {line.removeprefix('warning: ')}")


# --- compose ---------------------------------------------------------------------------------------------


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every volume, short or long syntax."""
    mounts = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2:
                mounts.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
        elif isinstance(vol, dict):
            mounts.append((str(vol.get("source", "")), str(vol.get("target", "")), bool(vol.get("read_only"))))
    return mounts


def _service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _mount_map(compose_dir: Path, service: Mapping[str, Any]) -> dict[str, Path]:
    """Container path -> host directory of a service's bind mounts."""
    return {target: (compose_dir / source).resolve() for source, target, _ in _mounts(service)
            if source.startswith((".", "/"))}


def check_compose(deploy: Path, out: Failures, tmp: Path) -> None:
    compose_dir = deploy / "compose"
    path = compose_dir / "docker-compose.mirror.yaml"
    doc = load_yaml(path, out)
    if doc is None:
        return
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        out.fail(path, "no services mapping")
        return
    for name in ("concelier", "excititor", "mirror-gateway"):
        if not isinstance(services.get(name), dict):
            out.fail(path, f"services.{name}: missing")
    example = compose_dir / "env" / "mirror.env.example"
    env_file = compose_dir / "env" / "mirror.env"
    env_path = env_file if env_file.is_file() else example
    try:
        file_env = read_env_file(env_path)
    except ConfigError as exc:
        out.fail(env_path, f"cannot be loaded: {exc}")
        return
    concelier = services.get("concelier") if isinstance(services.get("concelier"), dict) else {}
    config_check(file_env, env_path, "as loaded with set -a", out, tmp, _mount_map(compose_dir, concelier))

    roots = {"concelier": file_env.get("CONCELIER__MIRROR__EXPORTROOT", ""),
             "excititor": file_env.get("EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT", "")}
    for name in ("concelier", "excititor"):
        svc = services.get(name)
        if not isinstance(svc, dict):
            continue
        where = f"services.{name}"
        env_files = svc.get("env_file") or []
        env_files = [env_files] if isinstance(env_files, str) else env_files
        if "env/mirror.env" not in [str(e.get("path") if isinstance(e, dict) else e) for e in env_files]:
            out.fail(path, f"{where}.env_file: must include env/mirror.env")
        command = svc.get("command") or []
        command = command.split() if isinstance(command, str) else [str(c) for c in command]
        service_arg = command[command.index("--service") + 1:][:1] if "--service" in command else []
        if "serve" not in command or service_arg != [name]:
            out.fail(path, f"{where}.command: must run `stella-mirror serve --service {name}`")
        mounts = _mounts(svc)
        if not roots[name]:
            out.fail(env_path, f"no export root for {name} (CONCELIER__MIRROR__EXPORTROOT / "
                               "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT)")
        else:
            export = [m for m in mounts if m[1] == roots[name]]
            if not export:
                out.fail(path, f"{where}.volumes: nothing mounted at the export root {roots[name]}")
            for source, target, read_only in export:
                if not read_only:
                    out.fail(path, f"{where}.volumes: export mount {source} -> {target} must be read-only")
                if f"mirror-data/{name}" not in source:
                    out.fail(path, f"{where}.volumes: export mount source {source} is not ./mirror-data/{name}")
        secrets = [m for m in mounts if m[1] == "/run/secrets"]
        if not secrets or not all(m[2] for m in secrets):
            out.fail(path, f"{where}.volumes: ./mirror-secrets must be mounted read-only at /run/secrets")
        health = str((svc.get("healthcheck") or {}).get("test", ""))
        if "/readyz" not in health:
            out.fail(path, f"{where}.healthcheck: must probe /readyz")
        service_env = {**file_env, **_service_environment(svc)}
        config_check(service_env, path, f"{where} (env file + environment)", out, tmp, _mount_map(compose_dir, svc))

    gateway = services.get("mirror-gateway")
    if isinstance(gateway, dict):
        if not str(gateway.get("image", "")).startswith("nginx:"):
            out.fail(path, "services.mirror-gateway.image: must be an nginx image")
        targets = {m[1]: m for m in _mounts(gateway)}
        for target in ("/etc/nginx/nginx.conf", "/run/mirror-gateway/tls", "/run/mirror-gateway/secrets"):
            if target not in targets or not targets[target][2]:
                out.fail(path, f"services.mirror-gateway.volumes: {target} must be mounted read-only")


# --- gateway ---------------------------------------------------------------------------------------------


def _self_signed(cert: Path, key: Path, name: str) -> None:
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   capture_output=True, check=True)


def check_gateway(deploy: Path, out: Failures, tmp: Path) -> None:
    path = deploy / "compose" / "mirror-gateway" / "nginx.conf"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        out.fail(path, f"cannot read: {exc.strerror or exc}")
        return
    # One source of truth: the shipped nginx.conf must be exactly what `stella-mirror gateway render` writes
    # from the env file, and every host must be a domain's (both directions are named).
    from stella_mirror.config import load_config
    from stella_mirror.ops.gateway import plan, render

    env_path = deploy / "compose" / "env" / "mirror.env"
    env_path = env_path if env_path.is_file() else deploy / "compose" / "env" / "mirror.env.example"
    try:
        config = load_config(None, read_env_file(env_path))
        expected = render(config)
        configured = {h.name for h in plan(config).hosts}
    except ConfigError as exc:
        out.fail(env_path, f"cannot render the gateway: {exc}")
        return
    served = set(re.findall(r"^\s*server_name\s+([^;_\s][^;\s]*)\s*;", text, re.MULTILINE))
    for host in sorted(served - configured):
        out.fail(path, f"server_name {host}: no domain of {env_path.name} has this host name")
    for host in sorted(configured - served):
        out.fail(path, f"no server for {host}, a host name of a domain in {env_path.name}")
    if text != expected:
        out.fail(path, f"is not the rendering of {env_path.name}: run `set -a; . {env_path.name}; set +a; "
                       "stella-mirror gateway render --out mirror-gateway`")
    nginx = shutil.which(os.environ.get("NGINX", "nginx")) or shutil.which("/usr/sbin/nginx")
    if nginx is None:
        out.fail(path, "nginx not found (install nginx or set NGINX) — cannot run nginx -t")
        return
    prefix = tmp / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)

    def cert(match: re.Match[str]) -> str:
        directive, original = match.group(1), Path(match.group(2))
        stem = original.stem
        crt, key = prefix / "tls" / f"{stem}.crt", prefix / "tls" / f"{stem}.key"
        if not crt.exists():
            _self_signed(crt, key, f"{stem}.stella-ops.org")
        return f"{directive} {crt if directive == 'ssl_certificate' else key};"

    def htpasswd(match: re.Match[str]) -> str:
        target = prefix / "secrets" / Path(match.group(1)).name
        target.parent.mkdir(parents=True, exist_ok=True)
        # nginx reads the file per request, not at -t; a valid bcrypt entry keeps the copy realistic.
        hashed = bcrypt.hashpw(b"validator", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
        target.write_text(f"validator:{hashed}\n")
        return f"auth_basic_user_file {target};"

    rewrites: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
        (r"(?m)^\s*user\s+[^;]+;", ""),  # dropping privileges needs that user to exist here
        (r"\b(ssl_certificate_key|ssl_certificate)\s+([^;\s]+)\s*;", cert),
        (r"auth_basic_user_file\s+([^;\s]+)\s*;", htpasswd),
        (r"proxy_cache_path\s+\S+", f"proxy_cache_path {prefix / 'cache'}"),
        (r"(?m)^(\s*)pid\s+[^;]+;", rf"\g<1>pid {prefix / 'nginx.pid'};"),
        # Upstream host names resolve only inside the compose network.
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
        out.fail(path, f"nginx -t failed: {detail.replace(str(conf), path.name)}")


# --- helm ------------------------------------------------------------------------------------------------


def check_helm(deploy: Path, out: Failures, tmp: Path) -> None:
    chart = deploy / "helm" / "stellaops"
    meta = load_yaml(chart / "Chart.yaml", out)
    if isinstance(meta, dict):
        for key in ("apiVersion", "name", "version"):
            if not meta.get(key):
                out.fail(chart / "Chart.yaml", f"{key}: required")
    elif meta is not None:
        out.fail(chart / "Chart.yaml", "must be a mapping")
    load_yaml(chart / "values.yaml", out)
    templates = ["_helpers.tpl", "mirror-server.yaml", "mirror-gateway.yaml", "mirror-sync-cronjob.yaml"]
    for name in templates:
        tpl = chart / "templates" / name
        try:
            text = tpl.read_text(encoding="utf-8")
        except OSError:
            out.fail(tpl, "missing")
            continue
        if text.count("{{") != text.count("}}"):
            out.fail(tpl, "unbalanced {{ }} template delimiters")
    sync = chart / "templates" / "mirror-sync-cronjob.yaml"
    if sync.is_file() and not re.search(r"--delete --size-only", sync.read_text(encoding="utf-8")):
        out.fail(sync, "the sync must use aws s3 sync --delete --size-only (runbook §4.2)")
    values_path = chart / "values-mirror.yaml"
    values = load_yaml(values_path, out)
    if not isinstance(values, dict):
        if values is not None:
            out.fail(values_path, "must be a mapping")
        return
    flat = yaml.safe_dump(values)
    for name in ("concelier-mirror-jobs", "concelier-mirror-exports", "excititor-mirror-exports",
                 "concelier-mirror-auth", "excititor-mirror-auth", "mirror-gateway-tls", "mirror-gateway-htpasswd"):
        if name not in flat:
            out.fail(values_path, f"does not name {name} (runbook §1-§2)")
    if (values.get("mirrorSync") or {}).get("schedule") != "*/5 * * * *":
        out.fail(values_path, "mirrorSync.schedule: must be */5 * * * * (runbook §4.2)")
    for product in ("concelier", "excititor"):
        env = (values.get(product) or {}).get("env")
        if not isinstance(env, dict) or not env:
            out.fail(values_path, f"{product}.env: a map of environment variables is required")
            continue
        if not any("MAXDOWNLOADREQUESTSPERHOUR" in k for k in env):
            out.fail(values_path, f"{product}.env: no per-domain MAXDOWNLOADREQUESTSPERHOUR quota")
        foreign = [k for k in env if not str(k).upper().startswith(OUR_PREFIXES)]
        if foreign:
            out.fail(values_path, f"{product}.env: {', '.join(map(str, foreign))} is not a stella-mirror setting")
        config_check({str(k): str(v) for k, v in env.items()}, values_path, f"{product}.env", out, tmp)


# --- systemd ---------------------------------------------------------------------------------------------

UNITS = ("stella-mirror.service", "stella-mirror-sync.service", "stella-mirror-sync.timer")
_BAD = re.compile(r"Unknown (key|section|lvalue)|Failed to parse|Invalid|Missing '='|not executable|bad unit",
                  re.IGNORECASE)


def _systemd_analyze_usable(tmp: Path) -> str | None:
    """systemd-analyze, if it can verify a known-good unit here (containers without systemd may not)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    probe = tmp / "probe.service"
    probe.write_text("[Unit]\nDescription=probe\n[Service]\nType=oneshot\nExecStart=/bin/true\n")
    res = subprocess.run([tool, "verify", str(probe)], capture_output=True, text=True, check=False, cwd=tmp)
    return tool if res.returncode == 0 else None


def check_systemd(deploy: Path, out: Failures, tmp: Path) -> None:
    unit_dir = deploy / "systemd"
    work = tmp / "systemd"
    (work / "bin").mkdir(parents=True, exist_ok=True)
    expected = {
        "stella-mirror.service": [r"^ExecStart=\S*stella-mirror serve", r"^ExecReload=/bin/kill -HUP \$MAINPID"],
        "stella-mirror-sync.service": [r"^Type=oneshot", r"^ExecStart=\S*mirror-sync\.sh"],
        "stella-mirror-sync.timer": [r"^OnUnitActiveSec=5min$", r"^\[Install\]"],
    }
    copies = []
    for name in UNITS:
        unit = unit_dir / name
        try:
            text = unit.read_text(encoding="utf-8")
        except OSError:
            out.fail(unit, "missing")
            continue
        for pattern in expected[name]:
            if not re.search(pattern, text, re.MULTILINE):
                out.fail(unit, f"no line matching {pattern}")
        # The units name installed paths; point them at stub executables so verify checks the rest.
        for exe in set(re.findall(r"/usr/local/bin/([\w.-]+)", text)):
            stub = work / "bin" / exe
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
        copy = work / name
        copy.write_text(text.replace("/usr/local/bin/", f"{work / 'bin'}/"), encoding="utf-8")
        copies.append((unit, copy))
    tool = _systemd_analyze_usable(tmp)
    for unit, copy in copies:
        if tool is None:
            break
        res = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, check=False, cwd=work)
        bad = [line for line in res.stderr.splitlines() if _BAD.search(line)]
        if res.returncode != 0 or bad:
            detail = " | ".join(bad or res.stderr.strip().splitlines()[-1:]).replace(str(copy), unit.name)
            out.fail(unit, f"systemd-analyze verify: {detail or f'exit {res.returncode}'}")
    if tool is None:
        print("note: systemd-analyze unavailable or unusable here; systemd units got the key check only")
    script = unit_dir / "mirror-sync.sh"
    try:
        body = script.read_text(encoding="utf-8")
    except OSError:
        out.fail(script, "missing")
        return
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        out.fail(script, f"bash -n: {res.stderr.strip()}")
    verifies = re.search(r'"\$stella_mirror" verify "\$stage"', body) is not None
    if "--delete --size-only" not in body or not verifies:
        out.fail(script, "must sync with --delete --size-only and run stella-mirror verify before publishing")
    if not os.access(script, os.X_OK):
        out.fail(script, "not executable")


def main(argv: list[str]) -> int:
    deploy = Path(argv[1]).resolve() if len(argv) > 1 else Path(__file__).resolve().parent.parent
    out = Failures(deploy.parent)
    checks = [("compose", check_compose), ("gateway", check_gateway), ("helm", check_helm),
              ("systemd", check_systemd)]
    with tempfile.TemporaryDirectory(prefix="validate-profiles-") as tmp_name:
        tmp = Path(tmp_name)
        for label, check in checks:
            before = len(out.items)
            (tmp / label).mkdir()
            check(deploy, out, tmp / label)
            print(f"{'ok  ' if len(out.items) == before else 'FAIL'} {label}")
    if out.items:
        print(f"validate-profiles: {len(out.items)} problem(s) in {deploy}", file=sys.stderr)
        return 1
    print(f"validate-profiles: all profiles under {deploy} are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
