"""The authentication matrix on the production request path: in process (the app ``serve`` runs, through
``httpx.ASGITransport``) and over a real socket (``stella-mirror serve``), with the same expectations."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from mirrorsite import COMMUNITY, PRIMARY, InProcessClient, basic, build_site, production_app
from serverproc import ServerProc, start_server
from tokens import TokenIssuer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed"),
]

ISSUER = TokenIssuer()


class Client(Protocol):
    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response: ...
    def head(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response: ...


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], ServerProc]]:
    tmp = tmp_path_factory.mktemp("auth-matrix")
    site = build_site(tmp, ISSUER)
    sp = start_server(tmp / "srv", env={**site.env, "MIRROR__ACCESSLOG": str(tmp / "access.log")}, ready_path="/readyz")
    try:
        yield site.env, sp
    finally:
        sp.stop()


@pytest.fixture(params=["in-process", "serve"])
def client(request: pytest.FixtureRequest, served: tuple[dict[str, str], ServerProc]) -> Iterator[Client]:
    env, sp = served
    if request.param == "in-process":
        yield InProcessClient(production_app(env))
    else:
        with httpx.Client(base_url=sp.base, timeout=10) as c:
            yield c  # type: ignore[misc]


def test_auth_matrix(client: Client) -> None:
    now = ISSUER.claims()["iat"]
    cases = [
        ("no credentials", PRIMARY, None, 401),
        ("wrong password", PRIMARY, basic("alice", "nope"), 401),
        ("unknown user", PRIMARY, basic("mallory", "nope"), 401),
        ("other domain's credentials", PRIMARY, basic("bob", "pw-bob"), 401),
        ("valid Basic", PRIMARY, basic("alice", "pw-alice"), 200),
        ("expired JWT", PRIMARY, "Bearer " + ISSUER.mint(exp=now - 3600), 401),
        ("wrong issuer", PRIMARY, "Bearer " + ISSUER.mint(iss="https://elsewhere.test"), 401),
        ("wrong audience", PRIMARY, "Bearer " + ISSUER.mint(aud="another-api"), 401),
        ("missing scope", PRIMARY, "Bearer " + ISSUER.mint(scope="excititor.mirror.read"), 403),
        ("valid JWT", PRIMARY, "Bearer " + ISSUER.mint(), 200),
        ("open domain, anonymous", COMMUNITY, None, 200),
        ("open domain, wrong password", COMMUNITY, basic("bob", "nope"), 401),
        ("open domain, other domain's user", COMMUNITY, basic("alice", "pw-alice"), 401),
        ("Excititor, other domain's user", "/excititor/mirror/primary/index", basic("bob", "pw-bob"), 401),
        ("Excititor, valid Basic", "/excititor/mirror/primary/index", basic("alice", "pw-alice"), 200),
    ]
    got = {}
    for name, path, header, _ in cases:
        response = client.get(path, headers={"Authorization": header} if header else {})
        got[name] = response.status_code
        if response.status_code in (401, 403):
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["status"] == response.status_code and problem["type"].startswith("https://")
            assert "www-authenticate" in response.headers and response.headers["cache-control"] == "no-store"
    assert got == {name: want for name, _, _, want in cases}


def test_challenges_and_rate_limit_headers(client: Client) -> None:
    missing = client.get(PRIMARY)
    assert missing.headers["WWW-Authenticate"] == (
        'Basic realm="primary", charset="UTF-8", Bearer realm="primary", scope="concelier.mirror.read"'
    )
    scope = client.get(PRIMARY, headers={"Authorization": "Bearer " + ISSUER.mint(scope="x")})
    assert scope.json()["type"] == "https://stella-ops.org/problems/insufficient-scope"
    assert 'error="insufficient_scope"' in scope.headers["WWW-Authenticate"]
    head = client.head(PRIMARY)
    assert head.status_code == 401 and head.content == b""
    ok = client.get(PRIMARY, headers={"Authorization": basic("alice", "pw-alice")})
    assert ok.status_code == 200 and ok.headers["RateLimit-Limit"] == "1000"
    # An authenticated domain's payload: no `public` (RFC 9111 §3.5), one Vary naming Authorization.
    assert ok.headers["cache-control"] == "max-age=300, must-revalidate"
    assert ok.headers.get_list("vary") == ["Accept-Encoding, Authorization"]
    assert ok.headers["x-mirror-export-id"] == "e1"
    assert client.get("/healthz").status_code == 200  # ops routes need no credentials


def test_credentials_checked_once_then_remembered_and_never_logged(
    served: tuple[dict[str, str], ServerProc], tmp_path: Path
) -> None:
    _, sp = served
    with httpx.Client(base_url=sp.base, timeout=10, headers={"Authorization": basic("alice", "pw-alice")}) as c:
        assert {c.get(PRIMARY).status_code for _ in range(50)} == {200}
    log = sp.stderr() + "\n".join(sp.access_lines())
    assert "pw-alice" not in log and "Traceback" not in log
