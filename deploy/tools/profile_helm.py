"""The Helm profile, checked without helm: the chart rendered by Helm's own engine (stella_mirror.ops.helm:
helm-python-sdk), every object checked by kubernetes-validate, and each container run through its own view of
the files — ``config check`` in the servers, the gateway's init container rendering nginx.conf, then ``nginx -t``
on it with the gateway's volumes. Cluster secrets are stand-ins holding exactly the keys the README's
``kubectl create secret`` lines put in them."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
from profile_common import (
    CLI,
    Failures,
    check_certificates,
    config_check,
    load_yaml,
    nginx_test,
    our_env,
    self_signed,
    stand_in_htpasswd,
)

from stella_mirror.config import MirrorConfig, load_config
from stella_mirror.errors import ConfigError
from stella_mirror.ops.containers import (
    Container,
    SecretFiles,
    containers,
    local_env,
    local_path,
    materialize,
    pod_spec,
)
from stella_mirror.ops.helm import Manifest, render_chart
from stella_mirror.ops.helm import values as chart_values

KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "1.30.0")
"""The Kubernetes API the manifests must be valid for (one kubernetes-validate bundles)."""
MOUNTED_TLS = ("the chart mounts <tlsSecretPrefix><domain> for each MIRROR__DOMAINS__<n>__ID as "
               "/run/mirror-gateway/tls/mirror-<domain>.crt|.key")
RUNBOOK_CLAIMS = ("concelier-mirror-jobs", "concelier-mirror-exports", "excititor-mirror-exports")
"""Runbook §1's PVCs (mirror-mongo-data and mirror-minio-data are not needed: README, Deployment)."""


def stand_in_secrets(values: Mapping[str, Any], config: MirrorConfig, tmp: Path) -> SecretFiles:
    """The secrets of README's ``kubectl create secret`` lines, with throwaway contents: ``<product>-mirror-auth``
    (``<product>-authority-client``), ``mirror-gateway-tls-<domain>`` (``tls.crt``/``tls.key``) and
    ``mirror-gateway-htpasswd`` (``mirror-<domain>.htpasswd`` per domain). Other secrets are empty."""
    gw = values.get("mirrorGateway") or {}
    prefix, htpasswd = str(gw.get("tlsSecretPrefix", "")), str(gw.get("htpasswdSecret", ""))
    auth = {str((values.get(p) or {}).get("authSecret")): p for p in ("concelier", "excititor")}
    hosts: dict[str, list[str]] = {}
    for mirror in (config.concelier.mirror, config.excititor.mirror):
        for d in mirror.domains:
            hosts.setdefault(d.id, []).extend(h for h in d.hostnames if h not in hosts.get(d.id, []))
    domains = set(hosts)

    def secrets(name: str) -> dict[str, bytes]:
        if prefix and name.startswith(prefix):
            crt, key = tmp / "tls" / f"{name}.crt", tmp / "tls" / f"{name}.key"
            if not crt.exists():  # for the domain's host names, as the secret a operator creates must be
                domain = name[len(prefix):]
                self_signed(crt, key, hosts.get(domain) or [f"{domain}.invalid"])
            return {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes()}
        if name == htpasswd:
            return {f"mirror-{d}.htpasswd": stand_in_htpasswd() for d in domains}
        if name in auth:
            return {f"{auth[name]}-authority-client": b"stand-in\n"}
        return {}

    return secrets


def _validate_objects(manifests: list[Manifest], chart: Path, out: Failures) -> None:
    for m in manifests:
        try:
            kubernetes_validate.validate(m.doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top)"
            out.fail(chart.parent / m.source, f"{m.kind} {m.name}: {where}: {exc.message} "
                                                      f"(Kubernetes {KUBERNETES_VERSION})")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            out.fail(chart.parent / m.source, f"{m.kind} {m.name}: {exc}")


def _run_render(container: Container, mounts: Mapping[str, Path], where: Path, out: Failures) -> bool:
    """The gateway's init container: its own ``stella-mirror …`` command with its environment and volumes."""
    args = [str(local_path(a, mounts) or a) if a.startswith("/") else a for a in container.command[1:]]
    res = subprocess.run([*CLI, *args], env=our_env(local_env(container.env, mounts)), capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        for container_path, local in sorted(mounts.items(), key=lambda kv: -len(str(kv[1]))):
            detail = detail.replace(str(local), container_path)
        out.fail(where, f"{container.label}: {' '.join(container.command)} failed: {detail}")
        return False
    return True


def _check_gateway(pod: list[Container], config: MirrorConfig, values_path: Path, out: Failures, tmp: Path,
                   manifests: list[Manifest], secrets: SecretFiles) -> None:
    render = next((c for c in pod if c.init and c.command[:3] == ["stella-mirror", "gateway", "render"]), None)
    nginx = next((c for c in pod if not c.init and c.command[:1] == ["nginx"]), None)
    if render is None or nginx is None:
        out.fail(values_path, "stellaops-mirror-gateway: needs an init container running `stella-mirror gateway "
                              "render` and an nginx container")
        return
    render_mounts = materialize(render, tmp / "pods", manifests, secrets, {})
    if not _run_render(render, render_mounts, values_path, out):
        return
    mounts = materialize(nginx, tmp / "pods", manifests, secrets, {})
    conf = nginx.command[nginx.command.index("-c") + 1] if "-c" in nginx.command else "/etc/nginx/nginx.conf"
    local_conf = local_path(conf, mounts)
    if local_conf is None or not local_conf.is_file():
        out.fail(values_path, f"{nginx.label}: nginx -c {conf} is not what the render step wrote")
        return
    check_certificates(config, mounts, values_path, f"{nginx.label} ({MOUNTED_TLS})", out)
    nginx_test(local_conf.read_text(encoding="utf-8"), mounts, values_path, nginx.label, out, tmp)


def check_helm(deploy: Path, out: Failures, tmp: Path) -> None:
    chart = deploy / "helm" / "stellaops"
    values_path = chart / "values-mirror.yaml"
    sync = chart / "templates" / "mirror-sync-cronjob.yaml"
    if sync.is_file() and not re.search(r'"stella-mirror", "sync"', sync.read_text(encoding="utf-8")):
        out.fail(sync, "the CronJob must run stella-mirror sync (runbook §4.2, docs/sync.md)")
    raw = load_yaml(values_path, out)
    if not isinstance(raw, dict):
        return
    if (raw.get("mirrorSync") or {}).get("schedule") != "*/5 * * * *":
        out.fail(values_path, "mirrorSync.schedule: must be */5 * * * * (runbook §4.2)")
    rendered: dict[str, list[Manifest]] = {}
    for label, files in (("values.yaml", []), ("values-mirror.yaml", [values_path])):
        try:
            rendered[label] = render_chart(chart, files)
        except ConfigError as exc:
            out.fail(chart.parent / exc.key_path if exc.key_path.startswith(chart.name) else chart,
                     f"rendering with {label}: {exc.reason}")
            continue
        _validate_objects(rendered[label], chart, out)
    manifests = rendered.get("values-mirror.yaml")
    if manifests is None:
        return
    values = chart_values(chart, [values_path])
    env = {str(k): str(v) for k, v in (values.get("env") or {}).items()}
    foreign = [k for k in env if not k.upper().startswith(("CONCELIER__", "EXCITITOR__", "AUTHORITY__", "MIRROR__"))]
    if foreign:
        out.fail(values_path, f"env: {', '.join(foreign)} is not a stella-mirror setting")
    try:
        config = load_config(None, env)
    except ConfigError as exc:
        out.fail(values_path, f"env: {exc}")
        return
    claims = {str(v["persistentVolumeClaim"]["claimName"]) for m in manifests
              for v in (pod_spec(m.doc) or {}).get("volumes") or [] if "persistentVolumeClaim" in v}
    for claim in RUNBOOK_CLAIMS:
        if claim not in claims:
            out.fail(values_path, f"no workload mounts the PVC {claim} (runbook §1)")
    secrets = stand_in_secrets(values, config, tmp)
    pods: dict[str, list[Container]] = {}
    for c in containers(manifests):
        pods.setdefault(c.workload, []).append(c)
    for product in ("concelier", "excititor"):
        pod = pods.get(f"stellaops-{product}")
        if pod is None:
            out.fail(values_path, f"{product}: no stellaops-{product} Deployment is rendered")
            continue
        server = pod[0]
        mounts = materialize(server, tmp / "pods", manifests, secrets, {})
        root = config.concelier.mirror.export_root if product == "concelier" else config.excititor.export_root
        on_pvc = [m for m in server.mounts if "persistentVolumeClaim" in m.volume and root is not None
                  and (str(root) == m.path or str(root).startswith(m.path.rstrip("/") + "/"))]
        if not on_pvc:
            out.fail(values_path, f"{server.label}: the export root {root} is on no PVC of the container")
        config_check(server.env, values_path, server.label, out, tmp / server.workload, mounts)
    gateway = pods.get("stellaops-mirror-gateway")
    if gateway is None:
        out.fail(values_path, "no stellaops-mirror-gateway Deployment is rendered")
    else:
        _check_gateway(gateway, config, values_path, out, tmp, manifests, secrets)

