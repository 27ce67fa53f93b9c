"""Bearer JWTs against a JWKS (file and real HTTP URL): signature, issuer, audience, expiry, scope."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwcrypto.jwk
import jwcrypto.jwt
import pytest

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn import Authenticator, AuthFailure, AuthSettings
from stella_mirror.server.authn.bearer import BearerVerifier, JwksStore
from stella_mirror.server.context import DomainPolicy, Principal
from tokens import TokenIssuer, b64url

CONCELIER = DomainPolicy("concelier", "primary", require_authentication=True)
EXCITITOR = DomainPolicy("excititor", "vex")


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer()


def check(auth: Authenticator, domain: DomainPolicy, header: str | None) -> Principal:
    """The one entry point, from synchronous test code."""
    return asyncio.run(auth.authenticate(domain, header))


def make_auth(tmp_path: Path, *issuers: TokenIssuer, **settings: Any) -> Authenticator:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [i.jwk() for i in issuers]}))
    defaults: dict[str, Any] = {
        "issuer": issuers[0].issuer,
        "audiences": ("other-api", issuers[0].audience),
        "jwks_file": jwks,
    }
    return Authenticator(AuthSettings(**{**defaults, **settings}))


def outcome(auth: Authenticator, token: str, domain: DomainPolicy = CONCELIER) -> str:
    try:
        principal = check(auth, domain, f"Bearer {token}")
    except AuthFailure as exc:
        return f"{exc.status}:{exc.reason}"
    return f"ok:{principal.name}"


def test_minted_tokens_verify_with_an_independent_library(issuer: TokenIssuer) -> None:
    """The test minter itself is right: jwcrypto accepts what it signs."""
    for alg in ("ES256", "RS256", "EdDSA"):
        minter = TokenIssuer(alg=alg)
        token = jwcrypto.jwt.JWT(jwt=minter.mint(), key=jwcrypto.jwk.JWKSet.from_json(json.dumps(minter.jwks())))
        assert json.loads(token.claims)["sub"] == "downstream-1"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_valid_token_for_each_algorithm(tmp_path: Path, alg: str) -> None:
    minter = TokenIssuer(alg=alg)
    auth = make_auth(tmp_path, minter)
    principal = check(auth, CONCELIER, f"Bearer {minter.mint()}")
    assert (principal.name, principal.method) == ("downstream-1", "bearer")
    assert "concelier.mirror.read" in principal.scopes


def test_claim_matrix(tmp_path: Path, issuer: TokenIssuer) -> None:
    auth = make_auth(tmp_path, issuer, leeway_seconds=30)
    now = issuer.claims()["iat"]
    cases = {
        "valid": (issuer.mint(), "ok:downstream-1"),
        "expired": (issuer.mint(exp=now - 120), "401:expired"),
        "expired within leeway": (issuer.mint(exp=now - 10), "ok:downstream-1"),
        "no exp": (issuer.mint(exp=None), "401:malformed"),
        "not yet valid": (issuer.mint(nbf=now + 600), "401:not-yet-valid"),
        "issued in the future": (issuer.mint(iat=now + 600), "401:not-yet-valid"),
        "wrong issuer": (issuer.mint(iss="https://evil.test"), "401:bad-issuer"),
        "no issuer": (issuer.mint(iss=None), "401:bad-issuer"),
        "wrong audience": (issuer.mint(aud="someone-else"), "401:bad-audience"),
        "no audience": (issuer.mint(aud=None), "401:bad-audience"),
        "audience list": (issuer.mint(aud=["x", "stella-mirror"]), "ok:downstream-1"),
        "missing scope": (issuer.mint(scope="profile email"), "403:insufficient-scope"),
        "other product's scope": (issuer.mint(scope="excititor.mirror.read"), "403:insufficient-scope"),
        "scp list": (issuer.mint(scope=None, scp=["a", "concelier.mirror.read"]), "ok:downstream-1"),
        "client_id when no sub": (issuer.mint(sub=None, client_id="svc-7"), "ok:svc-7"),
        "no subject at all": (issuer.mint(sub=None), "401:malformed"),
    }
    got = {name: outcome(auth, token) for name, (token, _) in cases.items()}
    assert got == {name: want for name, (_, want) in cases.items()}


def test_scope_is_per_product_and_overridable(tmp_path: Path, issuer: TokenIssuer) -> None:
    auth = make_auth(tmp_path, issuer)
    vex_token = issuer.mint(scope="excititor.mirror.read")
    assert outcome(auth, vex_token, EXCITITOR) == "ok:downstream-1"
    assert outcome(auth, issuer.mint(), EXCITITOR) == "403:insufficient-scope"
    custom = DomainPolicy("concelier", "partners", accepted_scopes=("partners.read",))
    assert outcome(auth, issuer.mint(scope="partners.read"), custom) == "ok:downstream-1"
    assert outcome(auth, issuer.mint(), custom) == "403:insufficient-scope"


def test_signature_failures(tmp_path: Path, issuer: TokenIssuer) -> None:
    auth = make_auth(tmp_path, issuer)
    impostor = TokenIssuer(kid=issuer.kid)  # same kid, different key
    head, payload, sig = issuer.mint().split(".")
    forged_payload = b64url(json.dumps(issuer.claims(sub="admin")).encode())
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    cases = {
        "other key, same kid": impostor.mint(),
        "unknown kid": TokenIssuer(kid="rotated-out").mint(),
        "payload swapped": f"{head}.{forged_payload}.{sig}",
        "alg none": f"{none_header}.{payload}.",
        "HS256 with the public key as secret": _hs256_confusion(issuer),
    }
    assert {k: outcome(auth, t) for k, t in cases.items()} == dict.fromkeys(cases, "401:bad-signature")


def _hs256_confusion(issuer: TokenIssuer) -> str:
    import hashlib
    import hmac

    header = b64url(json.dumps({"alg": "HS256", "kid": issuer.kid}).encode())
    body = b64url(json.dumps(issuer.claims()).encode())
    key = json.dumps(issuer.jwk()).encode()
    return f"{header}.{body}.{b64url(hmac.new(key, f'{header}.{body}'.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20000, "a.b.c.d.e"])
def test_malformed_tokens(tmp_path: Path, issuer: TokenIssuer, token: str) -> None:
    assert outcome(make_auth(tmp_path, issuer), token) == "401:malformed"


def test_challenges(tmp_path: Path, issuer: TokenIssuer) -> None:
    auth = make_auth(tmp_path, issuer)
    with_basic = DomainPolicy("concelier", "primary", require_authentication=True, htpasswd=tmp_path / "none")
    assert auth.challenge(with_basic) == (
        'Basic realm="primary", charset="UTF-8", Bearer realm="primary", scope="concelier.mirror.read"'
    )
    with pytest.raises(AuthFailure) as info:
        check(auth, CONCELIER, f"Bearer {issuer.mint(scope='nope')}")
    assert info.value.challenge == 'Bearer realm="primary", scope="concelier.mirror.read", error="insufficient_scope"'
    with pytest.raises(AuthFailure) as info:
        check(auth, CONCELIER, f"Bearer {issuer.mint(exp=1)}")
    assert info.value.challenge == 'Bearer realm="primary", scope="concelier.mirror.read", error="invalid_token"'
    token = issuer.mint(exp=1)
    assert token not in f"{info.value} {info.value.detail}"


def test_reload_rereads_the_jwks_file(tmp_path: Path, issuer: TokenIssuer) -> None:
    auth = make_auth(tmp_path, issuer)
    rotated = TokenIssuer(kid="key-2")
    assert outcome(auth, rotated.mint()) == "401:bad-signature"
    (tmp_path / "jwks.json").write_text(json.dumps(rotated.jwks()))
    auth.reload()
    assert outcome(auth, rotated.mint()) == "ok:downstream-1"
    assert outcome(auth, issuer.mint()) == "401:bad-signature"  # the retired key no longer opens anything


def test_jwks_validation_and_private_members(tmp_path: Path, issuer: TokenIssuer) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keys": [issuer.jwk(), {"kty": "EC", "crv": "P-256", "x": "AA"}]}))
    with pytest.raises(ConfigError, match=r"bad\.json#/keys/1: unusable EC key"):
        JwksStore(bad)
    bad.write_text("[]")
    with pytest.raises(ConfigError, match=r"#/keys: not a JWKS"):
        JwksStore(bad)
    with_private = tmp_path / "priv.json"
    with_private.write_text(json.dumps({"keys": [{**issuer.jwk(), "d": "c2VjcmV0"}, {"kty": "oct", "k": "c2VjcmV0"}]}))
    keys = JwksStore(with_private).keys()
    assert len(keys) == 1 and "d" not in keys[0]


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jwksFile"):
        Authenticator(AuthSettings(issuer="https://a.test", audiences=("x",)))
    with pytest.raises(ConfigError, match="audiences"):
        Authenticator(AuthSettings(issuer="https://a.test", jwks_url="http://127.0.0.1:1/jwks"))
    with pytest.raises(ConfigError, match="issuer"):
        Authenticator(AuthSettings(audiences=("x",), jwks_url="http://127.0.0.1:1/jwks"))


# --- JWKS over HTTP -------------------------------------------------------------------------------


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS document that tests can change."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps(outer.document).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def test_jwks_url_fetched_lazily_and_refreshed_on_unknown_kid_at_most_every_60s(
    jwks_server: JwksServer, issuer: TokenIssuer
) -> None:
    now = [1000.0]
    store = JwksStore(url=jwks_server.url, min_refresh_seconds=60, clock=lambda: now[0])
    verifier = BearerVerifier(store, issuer.issuer, [issuer.audience])
    jwks_server.document = issuer.jwks()
    assert jwks_server.requests == 0  # nothing fetched before the first token
    assert verifier.verify(issuer.mint(), ["concelier.mirror.read"]).name == "downstream-1"
    assert jwks_server.requests == 1
    verifier.verify(issuer.mint(), ["concelier.mirror.read"])
    assert jwks_server.requests == 1  # known kid: served from the cache

    rotated = TokenIssuer(kid="key-2")
    jwks_server.document = issuer.jwks(rotated)
    now[0] += 10
    for _ in range(20):  # a flood of unknown-kid tokens within 60 s: no fetch at all
        with pytest.raises(AuthFailure, match="bad-signature"):
            verifier.verify(rotated.mint(), ["concelier.mirror.read"])
    assert jwks_server.requests == 1
    now[0] += 51  # 61 s after the last fetch
    assert verifier.verify(rotated.mint(), ["concelier.mirror.read"]).name == "downstream-1"
    assert jwks_server.requests == 2
    for _ in range(5):
        with pytest.raises(AuthFailure, match="bad-signature"):
            verifier.verify(TokenIssuer(kid="junk").mint(), ["concelier.mirror.read"])
    assert jwks_server.requests == 2


def test_jwks_url_failure_keeps_previous_keys(
    jwks_server: JwksServer, issuer: TokenIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    store = JwksStore(url=jwks_server.url, min_refresh_seconds=60, max_age_seconds=300, clock=lambda: now[0])
    verifier = BearerVerifier(store, issuer.issuer, [issuer.audience])
    jwks_server.document = issuer.jwks()
    verifier.verify(issuer.mint(), ["concelier.mirror.read"])
    jwks_server.status = 500
    now[0] += 301  # stale: refetch, which fails
    assert verifier.verify(issuer.mint(), ["concelier.mirror.read"]).name == "downstream-1"
    assert jwks_server.requests == 2
    assert "JWKS fetch from http://127.0.0.1" in caplog.text and "keeping 1 previous keys" in caplog.text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_path_fetches_the_url_off_loop(jwks_server: JwksServer, issuer: TokenIssuer) -> None:
    jwks_server.document = issuer.jwks()
    auth = Authenticator(AuthSettings(issuer=issuer.issuer, audiences=(issuer.audience,), jwks_url=jwks_server.url))
    principal = await auth.authenticate(CONCELIER, f"Bearer {issuer.mint()}")
    assert principal.name == "downstream-1" and jwks_server.requests == 1
    with pytest.raises(AuthFailure) as info:
        await auth.authenticate(CONCELIER, f"Bearer {issuer.mint(aud='x')}")
    assert info.value.reason == "bad-audience"


# --- the verified-token cache -----------------------------------------------------------------------


def test_verified_tokens_are_cached_but_still_expire_and_scope_checked(tmp_path: Path, issuer: TokenIssuer) -> None:
    import time

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    verifier = BearerVerifier(JwksStore(jwks), issuer.issuer, [issuer.audience], leeway_seconds=0)
    exp = int(time.time()) + 2
    token = issuer.mint(exp=exp)
    assert verifier.verify(token, ["concelier.mirror.read"]).name == "downstream-1"
    assert len(verifier._verified) == 1
    assert verifier.verify(token, ["concelier.mirror.read"]).name == "downstream-1"
    with pytest.raises(AuthFailure, match="insufficient-scope"):  # the scope is checked per domain, cached or not
        verifier.verify(token, ["excititor.mirror.read"])
    time.sleep(max(exp - time.time(), 0) + 0.05)
    with pytest.raises(AuthFailure) as info:
        verifier.verify(token, ["concelier.mirror.read"])
    assert info.value.reason == "expired"


def test_cached_token_rejected_after_its_key_is_removed(tmp_path: Path, issuer: TokenIssuer) -> None:
    auth = make_auth(tmp_path, issuer)
    token = issuer.mint()
    assert outcome(auth, token) == "ok:downstream-1"
    (tmp_path / "jwks.json").write_text(json.dumps(TokenIssuer(kid="other").jwks()))
    auth.reload()
    assert outcome(auth, token) == "401:bad-signature"


def test_a_verified_token_is_checked_once_until_the_keys_change(tmp_path: Path) -> None:
    """Steady traffic with one token pays for one signature check; a key-set change forces a new one."""
    minter = TokenIssuer(alg="RS256")
    auth = make_auth(tmp_path, minter)
    assert auth.bearer is not None
    token = f"Bearer {minter.mint()}"
    for _ in range(100):
        assert check(auth, CONCELIER, token).method == "bearer"
    assert auth.bearer.full_checks == 1
    other = f"Bearer {minter.mint(sub='someone-else')}"
    check(auth, CONCELIER, other)
    assert auth.bearer.full_checks == 2
    auth.reload()  # re-reads the JWKS file: the key set object changes, cached verdicts are dropped
    check(auth, CONCELIER, token)
    assert auth.bearer.full_checks == 3
