"""A tiny Starlette app wired like the real server's gateway (domain -> auth -> quotas -> route), for tests
of the auth and quota middlewares before and independently of the full server.

Paths are ``/<product>/<domain>/<kind>/<anything>`` with kind ``index``, ``download``, ``metadata``; ``/healthz``
is an ops route. ``serve(config, tmp)`` starts it in a real uvicorn process on a free 127.0.0.1 port, configured
by a JSON file (so two processes can share one Redis).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stella_mirror.server.authn import Authenticator, AuthSettings
from stella_mirror.server.context import CONTEXT_KEY, DomainPolicy, RequestContext
from stella_mirror.server.middleware.auth import AuthMiddleware
from stella_mirror.server.middleware.quotas import QuotaMiddleware
from stella_mirror.server.quotas import MemoryQuotaBackend, QuotaBackend, RedisQuotaBackend


class TestDomainMiddleware:
    """Stands in for the core engineer's domain middleware: path -> RequestContext."""

    def __init__(self, app: ASGIApp, domains: dict[tuple[str, str], DomainPolicy]) -> None:
        self.app = app
        self.domains = domains

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            parts = scope["path"].strip("/").split("/")
            client = scope.get("client") or ("", 0)
            ctx = RequestContext(request_id=uuid.uuid4().hex, client=client[0])
            if len(parts) >= 3 and (parts[0], parts[1]) in self.domains:
                ctx.domain = self.domains[(parts[0], parts[1])]
                ctx.product = ctx.domain.product
                ctx.route_kind = parts[2]  # type: ignore[assignment]
                ctx.route = f"{parts[0]}.{parts[2]}"
            scope[CONTEXT_KEY] = ctx
        await self.app(scope, receive, send)


async def whoami(request: Request) -> JSONResponse:
    ctx = request.scope[CONTEXT_KEY]
    principal = ctx.principal
    return JSONResponse({"principal": principal.name if principal else None,
                         "method": principal.method if principal else None, "pid": os.getpid()})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@dataclass
class Gateway:
    app: ASGIApp
    failures: Counter[str]
    rejects: Counter[str]
    holder: dict[str, Any]


def build_app(
    domains: list[DomainPolicy],
    authenticator: Authenticator,
    backend: QuotaBackend,
    window_seconds: int = 3600,
) -> Gateway:
    """The gateway stack; ``holder`` holds the current authenticator/backend so tests can swap them."""
    failures: Counter[str] = Counter()
    rejects: Counter[str] = Counter()
    holder: dict[str, Any] = {"auth": authenticator, "quota": backend}
    routes = [Route("/healthz", healthz), Route("/{path:path}", whoami, methods=["GET", "HEAD"])]
    inner: ASGIApp = Starlette(routes=routes)
    inner = QuotaMiddleware(inner, lambda: holder["quota"], window_seconds,
                            on_reject=lambda ctx: rejects.update([ctx.domain.domain_id if ctx.domain else "-"]))
    inner = AuthMiddleware(inner, lambda: holder["auth"], on_failure=lambda ctx, reason: failures.update([reason]))
    app = TestDomainMiddleware(inner, {(d.product, d.domain_id): d for d in domains})
    return Gateway(app, failures, rejects, holder)


# --- running it in a real uvicorn process -------------------------------------------------------


def _domain_from_json(d: dict[str, Any]) -> DomainPolicy:
    d = dict(d)
    if d.get("htpasswd"):
        d["htpasswd"] = Path(d["htpasswd"])
    for key in ("accepted_scopes", "hostnames"):
        if key in d:
            d[key] = tuple(d[key])
    return DomainPolicy(**d)


def app_from_env() -> ASGIApp:
    """uvicorn factory: builds the gateway from the JSON file named by $GATEWAY_CONFIG."""
    config = json.loads(Path(os.environ["GATEWAY_CONFIG"]).read_text())
    auth = config.get("auth", {})
    settings = AuthSettings(
        issuer=auth.get("issuer"), audiences=tuple(auth.get("audiences", ())),
        jwks_file=Path(auth["jwks_file"]) if auth.get("jwks_file") else None,
        require_authentication=auth.get("require_authentication", False),
    )
    domains = [_domain_from_json(d) for d in config["domains"]]
    quota = config.get("quota", {})
    backend: QuotaBackend
    if quota.get("redis_url"):
        backend = RedisQuotaBackend(quota["redis_url"], fail_mode=quota.get("fail_mode", "open"),
                                    key_prefix=quota.get("key_prefix", "stella-mirror:quota:"))
    else:
        backend = MemoryQuotaBackend()
    return build_app(domains, Authenticator(settings, domains), backend, quota.get("window_seconds", 3600)).app


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def serve(config: dict[str, Any], workdir: Path, name: str = "gw", timeout: float = 20.0) -> ServerProcess:
    """Start the gateway in a uvicorn subprocess on a free port and wait until /healthz answers."""
    from redisproc import free_port

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}.json"
    cfg.write_text(json.dumps(config))
    log = workdir / f"{name}.log"
    for _ in range(3):
        port = free_port()
        env = {**os.environ, "GATEWAY_CONFIG": str(cfg), "PYTHONPATH": str(Path(__file__).parent)}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "gateway_app:app_from_env", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning", "--no-access-log"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                time.sleep(0.05)
        server.stop()
    raise RuntimeError(f"gateway did not start; log:\n{log.read_text()}")


