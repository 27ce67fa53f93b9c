"""One mirror site for the auth, quota and hardening tests, served the two ways production code runs it.

:func:`build_site` publishes a signed Concelier export with two domains — ``primary`` (authentication required,
alice's htpasswd, an index budget) and ``community`` (open, bob's htpasswd) — an Excititor export with the same
two domains, a JWKS for bearer tokens, and returns the configuration as ``MIRROR``-style environment variables.
The same variables then configure:

* :func:`in_process` — the production application (``create_app`` on the loaded configuration) behind
  ``httpx.ASGITransport``: every request takes the real request path, without sockets;
* ``serverproc.start_server(..., env=site.env)`` — the real ``stella-mirror serve`` process on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.config import load_config
from stella_mirror.server.app import MirrorApp, create_app
from tokens import TokenIssuer
from treebuilder import advisory, publish_concelier, publish_excititor

PRIMARY = "/concelier/exports/mirror/primary/manifest.json"
PRIMARY_BUNDLE = "/concelier/exports/mirror/primary/bundle.json"
COMMUNITY = "/concelier/exports/mirror/community/manifest.json"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def htpasswd(path: Path, user: str, password: str, cost: int = 5) -> Path:
    subprocess.run(
        ["htpasswd", "-B", "-C", str(cost), "-c", "-b", str(path), user, password], check=True, capture_output=True
    )
    return path


@dataclass
class Site:
    root: Path
    env: dict[str, str]
    issuer: TokenIssuer


def build_site(
    tmp: Path,
    issuer: TokenIssuer | None = None,
    index_budget: int = 1000,
    extra: dict[str, str] | None = None,
    cost: int = 5,
) -> Site:
    issuer = issuer or TokenIssuer()
    key = generate_keypair(tmp / "keys")
    publish_concelier(
        tmp / "concelier",
        key,
        {"primary": [advisory(f"CVE-2024-{i:04d}") for i in range(3)], "community": [advisory("X-1")]},
        "e1",
    )
    publish_excititor(
        tmp / "excititor", key, {"primary": {"consensus": [{"v": 1}]}, "community": {"consensus": [{"v": 2}]}}, "x1"
    )
    primary = htpasswd(tmp / "primary.htpasswd", "alice", "pw-alice", cost)
    community = htpasswd(tmp / "community.htpasswd", "bob", "pw-bob", cost)
    (tmp / "jwks.json").write_text(json.dumps(issuer.jwks()))
    env = {
        "AUTHORITY__ISSUER": issuer.issuer,
        "AUTHORITY__AUDIENCES__0": issuer.audience,
        "AUTHORITY__JWKSFILE": str(tmp / "jwks.json"),
        "CONCELIER__MIRROR__EXPORTROOT": str(tmp / "concelier"),
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": str(primary),
        "CONCELIER__MIRROR__DOMAINS__0__MAXINDEXREQUESTSPERHOUR": str(index_budget),
        "CONCELIER__MIRROR__DOMAINS__1__ID": "community",
        "CONCELIER__MIRROR__DOMAINS__1__HTPASSWD": str(community),
        "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": str(tmp / "excititor"),
        "EXCITITOR__MIRROR__DOMAINS__0__ID": "primary",
        "EXCITITOR__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true",
        "EXCITITOR__MIRROR__DOMAINS__0__HTPASSWD": str(primary),
        "EXCITITOR__MIRROR__DOMAINS__1__ID": "community",
        "EXCITITOR__MIRROR__DOMAINS__1__HTPASSWD": str(community),
        "MIRROR__ACCESSLOG": "off",
        **(extra or {}),
    }
    return Site(tmp, env, issuer)


def production_app(env: dict[str, str]) -> MirrorApp:
    """The application ``serve`` runs in each worker, for this configuration."""
    return create_app(load_config(None, environ=env))


def in_process(app: MirrorApp, client: str = "10.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose requests go straight into ``app`` (no sockets), from the address ``client``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(client, 40000)), base_url="http://mirror")


class InProcessClient:
    """``httpx.Client``-like ``get``/``head`` into the production app in this process (one event loop per call)."""

    def __init__(self, app: MirrorApp, client: str = "10.0.0.1") -> None:
        self.app = app
        self.client = client

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            async with in_process(self.app, self.client) as c:
                response = await c.request(method, path, headers=headers)
                await response.aread()
                return response

        return asyncio.run(go())

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, headers)

    def head(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("HEAD", path, headers)


class SyncASGITransport(httpx.BaseTransport):
    """``httpx.Client`` transport into an ASGI app in this process (each request on its own event loop)."""

    def __init__(self, app: MirrorApp, client: str = "10.0.0.1") -> None:
        self.inner = httpx.ASGITransport(app=app, client=(client, 40000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(body))

        return asyncio.run(go())
