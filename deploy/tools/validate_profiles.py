"""Static validation of the mirror deployment profiles (runbook §3.1 step 4, DESIGN S13) — no docker, no helm.

Run through ``deploy/tools/validate-profiles.sh``. Checks, each failure naming its file:

- compose: the file against the Compose specification's JSON schema (check-jsonschema), the required services,
  the env file, export mounts read-only at the configured export roots, secrets read-only at /run/secrets,
  /readyz healthchecks, the gateway's config/TLS/htpasswd mounts; every environment key of the env file (as each
  service sees it, with its ``environment`` overrides) accepted by ``stella-mirror config check`` reading the
  files through the service's bind mounts — an unknown key is a failure here, not just a warning;
- gateway: the shipped nginx.conf is the rendering of the env file (same host names both ways), each domain's
  certificate covers its host names and does not expire within 30 days, and ``nginx -t`` accepts the
  configuration with the gateway service's files (cache, pid and upstream hosts moved to a temp prefix);
- Helm (profile_helm.py): the chart rendered by Helm's own engine (helm-python-sdk), every object valid for
  Kubernetes (kubernetes-validate), the servers' ``config check`` and the gateway's render + ``nginx -t`` in
  each container's own volumes, the runbook's PVCs;
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from profile_common import CLI, OUR_PREFIXES, Failures, check_certificates, config_check, load_yaml, nginx_test
from profile_helm import check_helm

from stella_mirror.config import load_config
from stella_mirror.errors import ConfigError
from stella_mirror.ops.envfile import read_env_file

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


def env_path(deploy: Path) -> Path:
    """The operator's env/mirror.env when it exists, else the shipped example."""
    env_file = deploy / "compose" / "env" / "mirror.env"
    return env_file if env_file.is_file() else env_file.with_name("mirror.env.example")


def check_compose_schema(path: Path, out: Failures) -> None:
    """The compose file against the Compose specification's JSON schema (vendored by check-jsonschema: offline)."""
    tool = Path(sys.executable).with_name("check-jsonschema")
    command = [str(tool)] if tool.is_file() else ["check-jsonschema"]
    try:
        res = subprocess.run([*command, "--builtin-schema", "vendor.compose-spec", "-o", "text", str(path)],
                             capture_output=True, text=True, check=False)
    except FileNotFoundError:
        out.fail(path, "check-jsonschema not found (pip install 'stella-mirror[validate]') — cannot check the schema")
        return
    if res.returncode != 0:
        detail = " | ".join(line.strip() for line in (res.stdout + res.stderr).splitlines()
                            if line.strip() and "Schema validation errors" not in line)
        out.fail(path, f"not valid against the Compose specification: {detail.replace(str(path), path.name)}")


def check_compose(deploy: Path, out: Failures, tmp: Path) -> None:
    compose_dir = deploy / "compose"
    path = compose_dir / "docker-compose.mirror.yaml"
    doc = load_yaml(path, out)
    if doc is None:
        return
    check_compose_schema(path, out)
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        out.fail(path, "no services mapping")
        return
    for name in ("concelier", "excititor", "mirror-gateway"):
        if not isinstance(services.get(name), dict):
            out.fail(path, f"services.{name}: missing")
    env_file = env_path(deploy)
    try:
        file_env = read_env_file(env_file)
    except ConfigError as exc:
        out.fail(env_file, f"cannot be loaded: {exc}")
        return
    concelier = services.get("concelier") if isinstance(services.get("concelier"), dict) else {}
    config_check(file_env, env_file, "as loaded with set -a", out, tmp, _mount_map(compose_dir, concelier))

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
            out.fail(env_file, f"no export root for {name} (CONCELIER__MIRROR__EXPORTROOT / "
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


def check_gateway(deploy: Path, out: Failures, tmp: Path) -> None:
    """The shipped nginx.conf is the rendering of the env file (same hosts both ways), every certificate covers
    its hosts for 30 days more, and nginx -t accepts it with the files the gateway service mounts."""
    from stella_mirror.ops.gateway import plan, render

    path = deploy / "compose" / "mirror-gateway" / "nginx.conf"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        out.fail(path, f"cannot read: {exc.strerror or exc}")
        return
    env_file = env_path(deploy)
    try:
        config = load_config(None, read_env_file(env_file))
        expected = render(config)
        configured = {h.name for h in plan(config).hosts}
    except ConfigError as exc:
        out.fail(env_file, f"cannot render the gateway: {exc}")
        return
    served = set(re.findall(r"^\s*server_name\s+([^;_\s][^;\s]*)\s*;", text, re.MULTILINE))
    for host in sorted(served - configured):
        out.fail(path, f"server_name {host}: no domain of {env_file.name} has this host name")
    for host in sorted(configured - served):
        out.fail(path, f"no server for {host}, a host name of a domain in {env_file.name}")
    if text != expected:
        out.fail(path, f"is not the rendering of {env_file.name}: run, in deploy/compose, `set -a; "
                       f". env/{env_file.name}; set +a; stella-mirror gateway render --out mirror-gateway`")
    compose = deploy / "compose"
    doc = _safe_yaml(compose / "docker-compose.mirror.yaml")
    services = doc.get("services") if isinstance(doc, dict) else None
    gateway = services.get("mirror-gateway") if isinstance(services, dict) else None
    mounts = _mount_map(compose, gateway) if isinstance(gateway, dict) else {}
    check_certificates(config, mounts, path, "services.mirror-gateway", out)
    nginx_test(text, mounts, path, "services.mirror-gateway", out, tmp)


def _safe_yaml(path: Path) -> Any:
    """The compose file for a second look (its errors were reported by check_compose)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


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
        "stella-mirror-sync.service": [r"^Type=oneshot", r"^ExecStart=\S*stella-mirror sync --config \S+"],
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
    if not re.search(r"^exec \S*stella-mirror\S* sync ", body, re.MULTILINE):
        out.fail(script, "must be the wrapper around `stella-mirror sync` (docs/sync.md)")
    jobs = unit_dir / "mirror-sync.yaml"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith((*OUR_PREFIXES, "SYNC__"))}
    res = subprocess.run([*CLI, "config", "check", "--config", str(jobs)], capture_output=True, text=True,
                         check=False, env=env)
    if res.returncode != 0:
        out.fail(jobs, f"stella-mirror config check refused it: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
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
