"""Containers of rendered Kubernetes objects seen from this machine: their environment (``envFrom`` ConfigMaps,
then ``env``) and their volumes as local directories, so the files a container's configuration names can be
checked — and ``serve`` started — exactly where the container would find them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stella_mirror.errors import ConfigError
from stella_mirror.ops.helm import Manifest


@dataclass(frozen=True)
class Mount:
    """A ``volumeMount``: where, and the pod volume it mounts."""

    path: str
    volume: dict[str, Any]


@dataclass(frozen=True)
class Container:
    """One container of a workload, as this machine can reproduce it."""

    workload: str
    name: str
    init: bool
    command: list[str]
    env: dict[str, str]
    """``envFrom`` ConfigMaps first, then ``env`` values (which win, as in Kubernetes)."""
    mounts: list[Mount]

    @property
    def label(self) -> str:
        return f"{self.workload}/{self.name}"


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload (Deployment, Job, CronJob, ...), None for other objects."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec")
    return pod if isinstance(pod, dict) else None


def containers(manifests: Sequence[Manifest]) -> list[Container]:
    """Every container (init containers too) of every workload, with its ConfigMap environment resolved."""
    config_maps = {m.name: m.doc.get("data") or {} for m in manifests if m.kind == "ConfigMap"}
    out = []
    for m in manifests:
        pod = pod_spec(m.doc)
        if pod is None:
            continue
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for init, key in ((True, "initContainers"), (False, "containers")):
            for c in pod.get(key) or []:
                env: dict[str, str] = {}
                for source in c.get("envFrom") or []:
                    ref = (source.get("configMapRef") or {}).get("name")
                    if ref is not None:
                        if ref not in config_maps:
                            raise ConfigError(m.source, f"{m.name}/{c.get('name')}: no ConfigMap {ref} is rendered")
                        env.update({str(k): str(v) for k, v in config_maps[ref].items()})
                for item in c.get("env") or []:
                    if "value" in item:
                        env[str(item["name"])] = str(item["value"])
                mounts = []
                for vm in c.get("volumeMounts") or []:
                    volume = volumes.get(vm.get("name"))
                    if volume is None:
                        raise ConfigError(m.source, f"{m.name}/{c.get('name')}: no volume {vm.get('name')}")
                    mounts.append(Mount(str(vm["mountPath"]), volume))
                command = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
                out.append(Container(m.name, str(c.get("name")), init, command, env, mounts))
    return out


SecretFiles = Callable[[str], Mapping[str, bytes]]
"""A secret's files by key, for a secret name (what ``kubectl create secret`` put in the cluster)."""


def _project(target: Path, files: Mapping[str, bytes], items: Sequence[Mapping[str, Any]] | None) -> None:
    """Write ``files`` into ``target`` as a secret/ConfigMap volume does (only ``items`` when given)."""
    chosen = {str(i["key"]): str(i["path"]) for i in items} if items else {k: k for k in files}
    for key, rel in chosen.items():
        if key in files:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(files[key])


def materialize(
    container: Container, root: Path, manifests: Sequence[Manifest], secrets: SecretFiles, claims: Mapping[str, Path]
) -> dict[str, Path]:
    """Local directories standing for the container's volumes: ``mountPath`` → directory. emptyDir: empty;
    ConfigMap: its data; secret (also projected): ``secrets(name)``; PVC: ``claims[name]`` (else empty). A volume
    is ``root/<workload>/<volume>``, so the containers of one pod (an init container and the main one) share it."""
    config_maps = {m.name: m.doc.get("data") or {} for m in manifests if m.kind == "ConfigMap"}
    out: dict[str, Path] = {}
    for mount in container.mounts:
        vol = mount.volume
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is not None and claim in claims:
            out[mount.path] = claims[claim]
            continue
        target = root / container.workload / str(vol.get("name"))
        out[mount.path] = target
        if target.exists():
            continue
        target.mkdir(parents=True)
        sources: list[tuple[str, Mapping[str, Any]]] = []
        if "secret" in vol:
            sources.append(("secret", vol["secret"]))
        if "configMap" in vol:
            sources.append(("configMap", vol["configMap"]))
        for src in (vol.get("projected") or {}).get("sources") or []:
            sources += [(kind, body) for kind, body in src.items() if kind in ("secret", "configMap")]
        for kind, body in sources:
            if kind == "secret":
                files = secrets(str(body.get("secretName") or body.get("name")))
            else:
                files = {k: str(v).encode() for k, v in config_maps.get(str(body.get("name")), {}).items()}
            _project(target, files, body.get("items"))
    return out


def local_path(path: str, mounts: Mapping[str, Path]) -> Path | None:
    """Where a container path lives here: under the longest mount that holds it, else None."""
    best = max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len, default=None)
    if best is None:
        return None
    return mounts[best] / Path(path).relative_to(best)


def local_env(env: Mapping[str, str], mounts: Mapping[str, Path]) -> dict[str, str]:
    """``env`` with every absolute path on a mount pointed at its local directory (others unchanged)."""
    out = dict(env)
    for key, value in env.items():
        if value.startswith("/"):
            local = local_path(value, mounts)
            if local is not None:
                out[key] = str(local)
    return out
