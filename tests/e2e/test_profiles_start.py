"""The shipped profiles start: ``serve`` from deploy/compose/env/mirror.env.example (as each compose service gets
it) and from the environment the Helm chart renders (values-mirror.yaml), with the files of runbook §2 made as an
operator makes them — htpasswd files by ``htpasswd -B``, certificates by openssl, the Authority client secret —
and exports published by the built-in exporter; each answers /readyz 200 and serves its domains on their hosts.

Only what cannot exist here changes: container paths point at a temp directory (through the service's bind mounts /
the pod's volumes), the Redis host at a real redis-server on loopback, and the listen address."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import yaml
from test_deploy_profiles import certificate

from clitools import cli
from redisproc import RedisProcess, redis_server  # noqa: F401  (fixture)
from serverproc import ServerProc, start_server
from stella_mirror.ops.containers import containers, local_env, materialize
from stella_mirror.ops.envfile import read_env_file
from stella_mirror.ops.helm import render_chart

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SAMPLES = REPO / "src" / "stella_mirror" / "samples"
DOMAINS = ("primary", "community")
USERS = {"primary": ("alice", "alice-pw"), "community": ("bob", "bob-pw")}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed Concelier and Excititor exports of the built-in samples, by the built-in exporter (its CLI)."""
    tmp = tmp_path_factory.mktemp("exports")
    assert cli("keys", "generate", "--out", tmp / "keys").returncode == 0
    key = tmp / "keys" / "mirror-key.pem"
    roots = {"concelier": tmp / "concelier", "excititor": tmp / "excititor"}
    res = cli("export", "concelier", "--source", f"osv:{SAMPLES / 'concelier' / 'osv'}",
              "--source", f"csaf:{SAMPLES / 'concelier' / 'csaf'}", "--domain", "primary", "--domain", "community",
              "--key", key, "--out", roots["concelier"])
    assert res.returncode == 0, res.stderr
    res = cli("export", "excititor", "--config", SAMPLES / "excititor" / "config.yaml", "--key", key,
              "--out", roots["excititor"])
    assert res.returncode == 0, res.stderr
    return roots


def htpasswd_file(path: Path, user: str, password: str) -> bytes:
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(path), user, password], check=True, capture_output=True)
    return path.read_bytes()


def certificate_pair(directory: Path, name: str, host: str) -> tuple[bytes, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    certificate(directory, name, host)
    return (directory / f"{name}.crt").read_bytes(), (directory / f"{name}.key").read_bytes()


def serve_args(command: list[str]) -> list[str]:
    """The container's ``serve`` arguments without ``--host``/``--port`` (here: a free loopback port)."""
    assert command[:2] == ["stella-mirror", "serve"], command
    args, rest = [], iter(command[2:])
    for arg in rest:
        if arg in ("--host", "--port"):
            next(rest)
        else:
            args.append(arg)
    return args


def check_serves(server: ServerProc, product: str) -> None:
    """/readyz 200, and each domain on its own host with its own credentials."""
    ready = httpx.get(server.url("/readyz"), timeout=5)
    assert ready.status_code == 200, ready.text
    for domain in DOMAINS:
        host = {"Host": f"mirror-{domain}.stella-ops.org"}
        path = ("/concelier/exports/index.json" if product == "concelier"
                else f"/excititor/mirror/{domain}/index")
        r = httpx.get(server.url(path), headers=host, auth=USERS[domain], timeout=5)
        assert r.status_code == 200, (domain, r.status_code, r.text)
        if product == "concelier":
            assert [d["domainId"] for d in r.json()["domains"]] == [domain]
    anonymous = httpx.get(server.url("/concelier/exports/index.json" if product == "concelier"
                                     else "/excititor/mirror/primary/index"),
                          headers={"Host": "mirror-primary.stella-ops.org"}, timeout=5)
    assert anonymous.status_code == 401


@pytest.fixture
def running() -> Iterator[list[ServerProc]]:
    servers: list[ServerProc] = []
    yield servers
    for s in servers:
        s.stop()


def test_compose_env_example_starts_both_services(tmp_path: Path, published: Mapping[str, Path],
                                                  redis_server: RedisProcess,  # noqa: F811
                                                  running: list[ServerProc]) -> None:
    compose_file = DEPLOY / "compose" / "docker-compose.mirror.yaml"
    services = yaml.safe_load(compose_file.read_text())["services"]
    local = tmp_path / "compose"  # the operator's deploy/compose, populated as runbook §2-§4 say
    (local / "mirror-gateway" / "secrets").mkdir(parents=True)
    for domain in DOMAINS:
        htpasswd_file(local / "mirror-gateway" / "secrets" / f"mirror-{domain}.htpasswd", *USERS[domain])
        certificate_pair(local / "mirror-gateway" / "tls", f"mirror-{domain}", f"mirror-{domain}.stella-ops.org")
    (local / "mirror-secrets").mkdir()
    (local / "mirror-secrets" / "concelier-authority-client").write_text("client-secret\n")
    (local / "mirror-data").mkdir()
    for product, root in published.items():
        (local / "mirror-data" / product).symlink_to(root)
    env = read_env_file(DEPLOY / "compose" / "env" / "mirror.env.example")
    assert env["MIRROR__QUOTAS__REDISURL"] == "redis://mirror-redis:6379/0"
    env["MIRROR__QUOTAS__REDISURL"] = redis_server.url  # the mirror-redis service, on loopback
    for product in ("concelier", "excititor"):
        svc = services[product]
        mounts = {v["target"]: (local / v["source"]).resolve() for v in svc["volumes"] if v["type"] == "bind"}
        for tmpfs in svc.get("tmpfs", []):
            target = tmpfs.split(":")[0]
            mounts[target] = tmp_path / product / "tmpfs" / target.strip("/").replace("/", "-")
            mounts[target].mkdir(parents=True)
        server = start_server(tmp_path / product, env=local_env(env, mounts), args=serve_args(svc["command"]),
                              ready_path="/readyz")
        running.append(server)
        check_serves(server, product)


def test_helm_rendered_environment_starts_both_servers(tmp_path: Path, published: Mapping[str, Path],
                                                      running: list[ServerProc]) -> None:
    chart = DEPLOY / "helm" / "stellaops"
    manifests = render_chart(chart, [chart / "values-mirror.yaml"])
    made = tmp_path / "made"
    made.mkdir()

    def secrets(name: str) -> dict[str, bytes]:
        """README's kubectl create secret lines, made with the real tools."""
        if name == "mirror-gateway-htpasswd":
            return {f"mirror-{d}.htpasswd": htpasswd_file(made / f"mirror-{d}.htpasswd", *USERS[d]) for d in DOMAINS}
        if name in ("concelier-mirror-auth", "excititor-mirror-auth"):
            product = name.split("-")[0]
            return {f"{product}-authority-client": b"client-secret\n"}
        if name.startswith("mirror-gateway-tls-"):
            domain = name.removeprefix("mirror-gateway-tls-")
            crt, key = certificate_pair(made, name, f"mirror-{domain}.stella-ops.org")
            return {"tls.crt": crt, "tls.key": key}
        return {}

    claims = {"concelier-mirror-exports": published["concelier"], "excititor-mirror-exports": published["excititor"]}
    servers = [c for c in containers(manifests) if c.command[:2] == ["stella-mirror", "serve"]]
    assert sorted(c.workload for c in servers) == ["stellaops-concelier", "stellaops-excititor"]
    for container in servers:
        mounts = materialize(container, tmp_path / "pods", manifests, secrets, claims)
        product = container.workload.removeprefix("stellaops-")
        server = start_server(tmp_path / product, env=local_env(container.env, mounts),
                              args=serve_args(container.command), ready_path="/readyz")
        running.append(server)
        check_serves(server, product)
