"""The authentication matrix over real sockets: the gateway stack in a uvicorn process on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from gateway_app import ServerProcess, serve
from tokens import TokenIssuer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed"),
]

ISSUER = TokenIssuer()
PRIMARY = "/concelier/primary/index/index.json"
COMMUNITY = "/concelier/community/index/index.json"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("auth-e2e")
    for name, user, password in (("primary", "alice", "pw-alice"), ("community", "bob", "pw-bob")):
        subprocess.run(["htpasswd", "-B", "-c", "-b", str(tmp / f"{name}.htpasswd"), user, password],
                       check=True, capture_output=True)
    (tmp / "jwks.json").write_text(json.dumps(ISSUER.jwks()))
    config = {
        "auth": {"issuer": ISSUER.issuer, "audiences": [ISSUER.audience], "jwks_file": str(tmp / "jwks.json")},
        "domains": [
            {"product": "concelier", "domain_id": "primary", "require_authentication": True,
             "htpasswd": str(tmp / "primary.htpasswd"), "max_index_requests_per_hour": 1000},
            {"product": "concelier", "domain_id": "community", "htpasswd": str(tmp / "community.htpasswd")},
        ],
    }
    proc = serve(config, tmp)
    yield proc
    proc.stop()


def test_auth_matrix_over_a_real_socket(server: ServerProcess) -> None:
    now = ISSUER.claims()["iat"]
    cases = [
        ("no credentials", PRIMARY, None, 401),
        ("wrong password", PRIMARY, basic("alice", "nope"), 401),
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
    ]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        got = {}
        for name, path, header, _ in cases:
            response = client.get(path, headers={"Authorization": header} if header else {})
            got[name] = response.status_code
            if response.status_code in (401, 403):
                assert response.headers["content-type"] == "application/problem+json"
                problem = response.json()
                assert problem["status"] == response.status_code and problem["type"].startswith("https://")
                assert "www-authenticate" in response.headers
        assert got == {name: want for name, _, _, want in cases}


def test_challenge_headers(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
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
        assert ok.json()["principal"] == "alice" and ok.headers["RateLimit-Limit"] == "1000"
        assert client.get("/healthz").status_code == 200  # ops routes need no credentials


def test_bcrypt_cache_over_the_wire(server: ServerProcess) -> None:
    """Many requests with the same credentials: answered (bcrypt once, then the cache)."""
    with httpx.Client(base_url=server.url, timeout=10, headers={"Authorization": basic("alice", "pw-alice")}) as c:
        assert {c.get(PRIMARY).status_code for _ in range(50)} == {200}
    log = server.log.read_text()
    assert "pw-alice" not in log and "Traceback" not in log
