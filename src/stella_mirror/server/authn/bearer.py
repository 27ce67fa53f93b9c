"""Bearer tokens: JWTs from the Authority, verified against its JWKS (a file, a URL, or both).

Verification uses PyJWT: it checks the signature with an explicit algorithm allow-list and raises one
distinct exception per failed claim check, which map one-to-one onto our stable failure reasons. Keys are
only ever public asymmetric keys (EC, RSA, OKP); symmetric ``oct`` entries of a JWKS are ignored, so a
token can never be "signed" with a public key used as an HMAC secret.

A JWKS URL is fetched lazily (first token), again when a token names a ``kid`` we do not know — at most once
per ``min_refresh_seconds`` so garbage tokens cannot make us hammer the Authority — and when the keys are
older than ``max_age_seconds`` (so revoked keys disappear). A failed fetch keeps the previous keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.failure import AuthFailure, Reason
from stella_mirror.server.context import Principal

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    # alg -> (kty, crv or None)
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", None),
}
"""Asymmetric algorithms only; ``none`` and HMAC are never accepted."""

MAX_TOKEN_LENGTH = 16 * 1024
MAX_NAME_LENGTH = 256
MAX_JWKS_BYTES = 1024 * 1024


def _redact_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_jwks(document: Any, source: str) -> list[dict[str, Any]]:
    """The usable public signing keys of a JWKS document.

    Raises :class:`ConfigError` (naming ``source`` and the JSON pointer) when the document is not a JWKS.
    Symmetric keys and keys whose ``use`` is not ``sig`` are skipped; private members are dropped.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{source}#/keys", "not a JWKS: expected an object with a 'keys' array")
    keys: list[dict[str, Any]] = []
    for i, key in enumerate(document["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise ConfigError(f"{source}#/keys/{i}", "not a JWK: expected an object with a 'kty' string")
        if key["kty"] not in ("EC", "RSA", "OKP") or key.get("use", "sig") != "sig":
            continue
        public = {k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")}
        try:
            jwt.PyJWK(public, algorithm=_default_alg(public))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            raise ConfigError(f"{source}#/keys/{i}", f"unusable {key['kty']} key") from None
        keys.append(public)
    return keys


def _default_alg(key: Mapping[str, Any]) -> str:
    for alg, (kty, crv) in ALLOWED_ALGORITHMS.items():
        if key.get("kty") == kty and (crv is None or key.get("crv") == crv):
            return alg
    raise ValueError("no supported algorithm for this key")


@dataclass
class _KeyState:
    keys: tuple[dict[str, Any], ...]
    built: dict[tuple[int, str], jwt.PyJWK] = field(default_factory=dict)


class JwksStore:
    """Public keys from a JWKS file and/or URL, refreshed as described in the module docstring. Thread-safe."""

    def __init__(
        self,
        file: Path | None = None,
        url: str | None = None,
        *,
        min_refresh_seconds: float = 60.0,
        empty_retry_seconds: float = 5.0,
        max_age_seconds: float = 3600.0,
        fetch_timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.file = file
        self.url = url
        self._min_refresh = min_refresh_seconds
        self._empty_retry = empty_retry_seconds
        self._max_age = max_age_seconds
        self._timeout = fetch_timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._file_keys: list[dict[str, Any]] = self._read_file() if file else []
        self._url_keys: list[dict[str, Any]] = []
        # Keys and the PyJWK objects built from them are replaced together as one immutable snapshot, so a
        # verification running on the event loop never mixes a new key list with objects built from an old one.
        self._state = _KeyState(tuple(self._file_keys))
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.fetch_count = 0
        """How many times the URL was fetched (for tests and metrics)."""

    def _read_file(self) -> list[dict[str, Any]]:
        assert self.file is not None
        try:
            data = self.file.read_bytes()
        except OSError as exc:
            raise ConfigError(str(self.file), f"cannot read JWKS file: {exc.strerror or type(exc).__name__}") from None
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ConfigError(str(self.file), f"not JSON: {exc}") from None
        return parse_jwks(document, str(self.file))

    def reload(self) -> None:
        """Re-read the file (raising :class:`ConfigError` and keeping the old keys when invalid) and mark
        URL keys stale so the next token fetches them again."""
        keys = self._read_file() if self.file else []
        with self._lock:
            self._file_keys = keys
            self._state = _KeyState(tuple(self._file_keys + self._url_keys))
            self._attempted_at = None
            self._fetched_at = None if self._fetched_at is None else self._fetched_at - self._max_age

    @property
    def generation(self) -> object:
        """An object that changes identity whenever the key set changes (for caches of verified tokens)."""
        return self._state

    def keys(self) -> tuple[dict[str, Any], ...]:
        """All current keys (file first, then URL)."""
        return self._state.keys

    def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """Keys that may have signed a token with this header: same ``kid`` (any, when absent), a key type
        matching ``alg``, and no contradicting ``alg`` member."""
        kty, crv = ALLOWED_ALGORITHMS[alg]
        state = self._state
        found: list[jwt.PyJWK] = []
        for i, key in enumerate(state.keys):
            if kid is not None and key.get("kid") != kid:
                continue
            if key.get("kty") != kty or (crv is not None and key.get("crv") != crv):
                continue
            if key.get("alg", alg) != alg:
                continue
            built = state.built.get((i, alg))
            if built is None:
                try:
                    built = jwt.PyJWK(key, algorithm=alg)
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
                    continue
                state.built[(i, alg)] = built
            found.append(built)
        return found

    def wants_fetch(self, kid: str | None, alg: str) -> bool:
        """Whether the URL should be fetched before verifying a token with this header."""
        if self.url is None:
            return False
        now = self._clock()
        if self._attempted_at is None:
            return True
        since = now - self._attempted_at
        if not self._url_keys and since >= self._empty_retry:
            return True
        if since < self._min_refresh:
            return False
        stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
        return stale or not self.candidates(kid, alg)

    def refresh(self, kid: str | None = None, alg: str = "ES256") -> None:
        """Fetch the URL if :meth:`wants_fetch` still says so once the lock is held (blocking I/O).

        Failures are logged (without the URL's credentials) and keep the previous keys; never raises.
        """
        with self._lock:
            if not self.wants_fetch(kid, alg):
                return
            assert self.url is not None
            self._attempted_at = self._clock()
            self.fetch_count += 1
            try:
                response = httpx.get(self.url, timeout=self._timeout, follow_redirects=False)
                response.raise_for_status()
                if len(response.content) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
                keys = parse_jwks(response.json(), _redact_url(self.url))
            except (httpx.HTTPError, ValueError, ConfigError) as exc:
                log.warning(
                    "JWKS fetch from %s failed (%s); keeping %d previous keys",
                    _redact_url(self.url),
                    exc,
                    len(self._url_keys),
                )
                return
            self._url_keys = keys
            self._state = _KeyState(tuple(self._file_keys + self._url_keys))
            self._fetched_at = self._attempted_at


_CLAIM_REASONS: Mapping[str, Reason] = {"iss": "bad-issuer", "aud": "bad-audience"}


@dataclass(frozen=True)
class TokenHeader:
    """The parts of a JWT's (unverified) header we route on."""

    alg: str
    kid: str | None


def read_header(token: str) -> TokenHeader:
    """The token's algorithm and key id, or :class:`AuthFailure` ``malformed``/``bad-signature``."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise AuthFailure(401, "malformed", "the bearer token is not a signed JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthFailure(401, "malformed", "the bearer token is not a signed JWT") from None
    alg = header.get("alg")
    kid = header.get("kid")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise AuthFailure(401, "bad-signature", "the bearer token's algorithm is not accepted")
    if kid is not None and not isinstance(kid, str):
        raise AuthFailure(401, "malformed", "the bearer token's key id is not a string")
    return TokenHeader(alg=alg, kid=kid)


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (space-separated string, RFC 8693) and/or ``scp`` (list or string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)


class BearerVerifier:
    """Checks a JWT's signature, ``iss``, ``aud``, ``exp`` (required), ``nbf`` and ``iat``, then its scope.

    Clients reuse one token for many requests, and a signature check costs ~0.2 ms on the event loop, so
    verified tokens are remembered (by SHA-256 of the token) until they expire, for at most
    ``cache_seconds``, and only while the key set they were verified against is still the current one — a
    reload or a JWKS refresh that changes the keys invalidates every entry.
    """

    def __init__(
        self,
        store: JwksStore,
        issuer: str,
        audiences: Iterable[str],
        leeway_seconds: float = 30,
        *,
        cache_seconds: float = 300.0,
        cache_entries: int = 10_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.leeway = leeway_seconds
        self._cache_seconds = cache_seconds
        self._cache_entries = cache_entries
        self._wall = wall_clock
        self._verified: OrderedDict[bytes, tuple[object, Principal, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.full_checks = 0
        """Signature + claim checks actually performed (cache misses); exposed for tests and metrics."""

    def _cached(self, digest: bytes) -> Principal | None:
        with self._lock:
            entry = self._verified.get(digest)
            if entry is None:
                return None
            generation, principal, valid_until = entry
            if generation is not self.store.generation or self._wall() >= valid_until:
                del self._verified[digest]
                return None
            return principal

    def _remember(self, digest: bytes, generation: object, principal: Principal, exp: float) -> None:
        valid_until = min(exp + self.leeway, self._wall() + self._cache_seconds)
        with self._lock:
            self._verified[digest] = (generation, principal, valid_until)
            while len(self._verified) > self._cache_entries:
                self._verified.popitem(last=False)

    def verify(self, token: str, required_scopes: Iterable[str], *, header: TokenHeader | None = None) -> Principal:
        """The token's principal, or :class:`AuthFailure`. May block on a JWKS fetch (see :meth:`JwksStore.refresh`)."""
        header = header or read_header(token)
        if self.store.wants_fetch(header.kid, header.alg):
            self.store.refresh(header.kid, header.alg)
        return self.verify_with_current_keys(token, required_scopes, header)

    def verify_with_current_keys(self, token: str, required_scopes: Iterable[str], header: TokenHeader) -> Principal:
        """Like :meth:`verify` but never fetches: used on the event loop after an off-loop refresh."""
        wanted = tuple(required_scopes)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        principal = self._cached(digest)
        if principal is None:
            generation = self.store.generation
            self.full_checks += 1
            principal, exp = self._check(token, header)
            self._remember(digest, generation, principal, exp)
        if not principal.scopes.intersection(wanted):
            raise AuthFailure(403, "insufficient-scope", f"the bearer token lacks the scope {' or '.join(wanted)}")
        return principal

    def _check(self, token: str, header: TokenHeader) -> tuple[Principal, float]:
        """Full verification; the principal and the token's ``exp``."""
        keys = self.store.candidates(header.kid, header.alg)
        if not keys:
            raise AuthFailure(401, "bad-signature", "the bearer token is signed by an unknown key")
        claims: dict[str, Any] | None = None
        last_error: jwt.PyJWTError | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=[header.alg],
                    issuer=self.issuer,
                    audience=list(self.audiences),
                    leeway=self.leeway,
                    options={"require": ["exp", "iss", "aud"], "verify_sub": False, "verify_jti": False},
                )
                break
            except jwt.InvalidSignatureError as exc:
                last_error = exc  # try the next key with the same kid (or any key when there is no kid)
            except jwt.PyJWTError as exc:
                raise _claim_failure(exc) from None
        if claims is None:
            raise _claim_failure(last_error or jwt.InvalidSignatureError())
        name = claims.get("sub") or claims.get("client_id")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise AuthFailure(401, "malformed", "the bearer token names no subject")
        return Principal(name=name, method="bearer", scopes=token_scopes(claims)), float(claims["exp"])


def _claim_failure(exc: jwt.PyJWTError) -> AuthFailure:
    """Map a PyJWT exception onto our reason slugs (the message never quotes the token)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthFailure(401, "expired", "the bearer token has expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthFailure(401, "not-yet-valid", "the bearer token is not valid yet")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthFailure(401, "bad-issuer", "the bearer token comes from another issuer")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthFailure(401, "bad-audience", "the bearer token is meant for another audience")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        reason = _CLAIM_REASONS.get(exc.claim, "malformed")
        return AuthFailure(401, reason, f"the bearer token has no '{exc.claim}' claim")
    if isinstance(exc, (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError)):
        return AuthFailure(401, "bad-signature", "the bearer token's signature does not verify")
    return AuthFailure(401, "malformed", "the bearer token is not a valid JWT")
