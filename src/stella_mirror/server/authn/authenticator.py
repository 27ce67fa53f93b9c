"""Who is calling: Basic (per-domain htpasswd) or Bearer (Authority JWT), or anonymous where allowed.

Rules, in order:

* no ``Authorization`` header: anonymous when neither the domain nor the global switch requires
  authentication, else ``401 missing``;
* ``Basic``: checked against *this domain's* htpasswd file only, so a credential of one domain never opens
  another; a wrong credential is ``401`` even on an open domain (a client that sends credentials expects them
  to be checked, and silently downgrading it to anonymous would hide mistakes);
* ``Bearer``: a JWT checked against the Authority's JWKS, issuer, audiences and expiry, then for one of the
  domain's scopes (``403 insufficient-scope`` when the token is valid but lacks it);
* any other scheme: ``401 malformed``.

:meth:`Authenticator.authenticate` is the one entry point. bcrypt is slow on purpose, so it runs in a worker
thread, and its verdicts are remembered for a while (see :mod:`stella_mirror.server.authn.basic`); a request
whose credential was checked a moment ago costs a hash and a dictionary lookup. A wrong Basic credential is
``bad-credentials`` whether the user exists or not — in the answer and in the metrics, so neither tells a
client which user names exist.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.basic import (
    FAILED,
    FAILURE_TTL,
    REJECTED_DETAIL,
    BasicCredentials,
    VerdictCache,
    check_password,
    parse_basic,
)
from stella_mirror.server.authn.bearer import BearerVerifier, JwksStore, TokenHeader, read_header
from stella_mirror.server.authn.failure import AuthFailure, Reason
from stella_mirror.server.authn.htpasswd import HtpasswdTable, load_htpasswd
from stella_mirror.server.context import DomainPolicy, Principal

__all__ = ["ANONYMOUS", "AuthFailure", "AuthSettings", "Authenticator", "CheckBudget", "Reason"]

ANONYMOUS = Principal(name="anonymous", method="anonymous")

MAX_AUTHORIZATION_LENGTH = 16 * 1024


@dataclass(frozen=True)
class AuthSettings:
    """Authentication settings shared by all domains (each domain adds its own htpasswd and flag)."""

    issuer: str | None = None
    """AUTHORITY__ISSUER: the exact ``iss`` bearer tokens must carry."""
    audiences: tuple[str, ...] = ()
    """AUTHORITY__AUDIENCES__<n>: a token's ``aud`` must contain at least one of these."""
    jwks_file: Path | None = None
    """AUTHORITY__JWKSFILE: the Authority's public keys, re-read on reload."""
    jwks_url: str | None = None
    """AUTHORITY__JWKSURL: fetched lazily, cached, refreshed on an unknown ``kid`` at most every 60 s."""
    leeway_seconds: int = 30
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
    basic_cache_ttl_seconds: float = 60.0
    """How long a successful bcrypt check is remembered; a failed one for at most basic.FAILURE_TTL (0: neither)."""
    require_authentication: bool = False
    """Global switch; a domain's own ``require_authentication`` also applies (either true: required)."""
    jwks_min_refresh_seconds: float = 60.0
    """The shortest interval between two JWKS URL fetches triggered by unknown key ids."""

    @property
    def token_auth(self) -> bool:
        """Whether bearer tokens are accepted (an issuer or a JWKS is configured)."""
        return bool(self.issuer or self.jwks_file or self.jwks_url)


@dataclass(frozen=True)
class _BasicAttempt:
    creds: BasicCredentials
    table: HtpasswdTable
    encoded: str = field(repr=False)
    """The credential as sent (the success cache's key)."""


@dataclass(frozen=True)
class _BearerAttempt:
    token: str
    header: TokenHeader


def _quote(value: str) -> str:
    """An RFC 9110 quoted-string body (the realm is configuration, but quoting keeps the header well-formed)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


class Authenticator:
    """Authenticates requests for any configured domain. Safe to share between threads and tasks.

    ``domains`` (optional) are the domains whose htpasswd files are loaded and validated up front, so a bad
    file fails at startup with a :class:`ConfigError` instead of on the first request; files of other
    domains are loaded on first use.
    """

    def __init__(self, settings: AuthSettings, domains: Iterable[DomainPolicy] = ()) -> None:
        self.settings = settings
        self._bearer: BearerVerifier | None = None
        if settings.token_auth:
            if not (settings.jwks_file or settings.jwks_url):
                raise ConfigError("authority.jwksFile", "an issuer is set but neither a JWKS file nor a JWKS URL")
            if not settings.issuer:
                raise ConfigError("authority.issuer", "required when a JWKS is configured")
            if not settings.audiences:
                raise ConfigError("authority.audiences", "at least one audience is required when a JWKS is configured")
            store = JwksStore(
                settings.jwks_file, settings.jwks_url, min_refresh_seconds=settings.jwks_min_refresh_seconds
            )
            self._bearer = BearerVerifier(store, settings.issuer, settings.audiences, settings.leeway_seconds)
        ttl = settings.basic_cache_ttl_seconds
        self._cache = VerdictCache(ttl, failure_ttl_seconds=min(FAILURE_TTL, ttl))
        self._lock = threading.Lock()
        self._tables: dict[Path, HtpasswdTable] = {}
        for domain in domains:
            if domain.htpasswd is not None:
                self._table(domain.htpasswd)

    # --- public API ------------------------------------------------------------------------------

    @property
    def token_auth(self) -> bool:
        """Whether bearer tokens are accepted."""
        return self._bearer is not None

    @property
    def jwks(self) -> JwksStore | None:
        """The JWKS store (``None`` without token auth); exposed for readiness checks and tests."""
        return self._bearer.store if self._bearer else None

    @property
    def bearer(self) -> BearerVerifier | None:
        """The bearer-token verifier, when token authentication is configured."""
        return self._bearer

    def required(self, domain: DomainPolicy) -> bool:
        """Whether anonymous requests to ``domain`` are refused."""
        return self.settings.require_authentication or domain.require_authentication

    def challenge(self, domain: DomainPolicy, failure: AuthFailure | None = None, bearer_error: bool = False) -> str:
        """The ``WWW-Authenticate`` value for ``domain``: Basic where an htpasswd exists (or nothing else is
        possible), Bearer with the accepted scopes where tokens are; RFC 6750 error codes on Bearer."""
        realm = _quote(domain.realm)
        bearer = ""
        if self.token_auth:
            bearer = f'Bearer realm="{realm}", scope="{_quote(" ".join(domain.scopes()))}"'
            if failure is not None and failure.status == 403:
                return bearer + ', error="insufficient_scope"'
            if bearer_error:
                bearer += ', error="invalid_token"'
        parts = []
        if domain.htpasswd is not None or not self.token_auth:
            parts.append(f'Basic realm="{realm}", charset="UTF-8"')
        if bearer:
            parts.append(bearer)
        return ", ".join(parts)

    async def authenticate(
        self, domain: DomainPolicy, authorization: str | None, budget: CheckBudget | None = None
    ) -> Principal:
        """The principal (anonymous where allowed), or :class:`AuthFailure`. bcrypt checks and JWKS fetches run
        in a worker thread. ``budget`` bounds the bcrypt checks a caller that asks for several domains may make
        (visibility): past it, a credential not decided by a remembered verdict is refused."""
        attempt = self._begin(domain, authorization)
        if isinstance(attempt, Principal):
            return attempt
        if isinstance(attempt, _BasicAttempt):
            if budget is not None and not budget.spend():
                raise self._fail(domain, 401, "bad-credentials", REJECTED_DETAIL)
            return await anyio.to_thread.run_sync(self._finish_basic, domain, attempt)
        bearer = self._bearer
        assert bearer is not None
        header = attempt.header
        if bearer.store.wants_fetch(header.kid, header.alg):
            await anyio.to_thread.run_sync(bearer.store.refresh, header.kid, header.alg)
        try:
            return bearer.verify_with_current_keys(attempt.token, domain.scopes(), header)
        except AuthFailure as exc:
            raise exc.with_challenge(self.challenge(domain, exc, bearer_error=True)) from None

    def listed_first(self, domains: list[DomainPolicy], authorization: str | None) -> list[DomainPolicy]:
        """``domains`` with those whose htpasswd file lists the Basic user first (the check a valid credential
        needs comes before any other, so a bounded :class:`CheckBudget` decides what it opens)."""
        try:
            creds = parse_basic(authorization.strip().partition(" ")[2]) if authorization else None
        except AuthFailure:
            creds = None
        if creds is None:
            return domains

        def unlisted(policy: DomainPolicy) -> bool:
            table = self._tables.get(policy.htpasswd) if policy.htpasswd is not None else None
            return table is None or creds.user not in table.users

        return sorted(domains, key=unlisted)

    def reload(self) -> None:
        """Re-read every htpasswd file and the JWKS file, and drop the Basic cache.

        All files are read before anything is replaced: when one is invalid, :class:`ConfigError` is raised
        and the previous state stays in force.
        """
        with self._lock:
            paths = list(self._tables)
        fresh = {path: load_htpasswd(path) for path in paths}
        if self._bearer is not None:
            self._bearer.store.reload()
        with self._lock:
            self._tables.update(fresh)
        self._cache.clear()

    # --- internals -------------------------------------------------------------------------------

    def _fail(self, domain: DomainPolicy, status: int, reason: Reason, detail: str) -> AuthFailure:
        failure = AuthFailure(status, reason, detail)
        return failure.with_challenge(self.challenge(domain, failure))

    def _table(self, path: Path) -> HtpasswdTable:
        # A single dict lookup is atomic under the GIL, and tables are only ever replaced whole, so the hot
        # path reads without the lock; only loading a new table takes it.
        table = self._tables.get(path)
        if table is None:
            table = load_htpasswd(path)
            with self._lock:
                table = self._tables.setdefault(path, table)
        return table

    def _begin(self, domain: DomainPolicy, authorization: str | None) -> Principal | _BasicAttempt | _BearerAttempt:
        """Everything that is fast: header parsing, table lookup, the Basic cache. Returns a principal when
        done, else what is left to check."""
        if authorization is None or not authorization.strip():
            if self.required(domain):
                raise self._fail(domain, 401, "missing", "this mirror domain requires authentication")
            return ANONYMOUS
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            raise self._fail(domain, 401, "malformed", "the Authorization header is too long")
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            encoded = value.strip()
            known = self._tables.get(domain.htpasswd) if domain.htpasswd is not None else None
            if known is not None:
                # Steady traffic: these exact credentials were checked a moment ago (no decoding needed).
                verdict = self._cache.hit(str(known.path), encoded, known.users)
                if verdict is FAILED:
                    raise self._fail(domain, 401, "bad-credentials", REJECTED_DETAIL)
                if verdict is not None:
                    return verdict
            try:
                creds = parse_basic(encoded)
            except AuthFailure as exc:
                raise exc.with_challenge(self.challenge(domain, exc)) from None
            if domain.htpasswd is None:
                raise self._fail(domain, 401, "bad-credentials", "this mirror domain does not accept Basic credentials")
            return _BasicAttempt(creds, self._table(domain.htpasswd), encoded)
        if scheme == "bearer":
            if self._bearer is None:
                raise self._fail(domain, 401, "bad-credentials", "bearer tokens are not accepted here")
            try:
                header = read_header(value.strip())
            except AuthFailure as exc:
                raise exc.with_challenge(self.challenge(domain, exc, bearer_error=True)) from None
            return _BearerAttempt(value.strip(), header)
        raise self._fail(domain, 401, "malformed", "unsupported authentication scheme")

    def _finish_basic(self, domain: DomainPolicy, attempt: _BasicAttempt) -> Principal:
        """The slow part of Basic: one bcrypt check (a dummy one for unknown users), remembered either way."""
        creds, table = attempt.creds, attempt.table
        stored = table.users.get(creds.user)
        if check_password(table, creds):
            principal = Principal(name=creds.user, method="basic")
            self._cache.remember(str(table.path), attempt.encoded, creds.user, principal, stored)
            return principal
        self._cache.remember(str(table.path), attempt.encoded, creds.user, FAILED, stored)
        raise self._fail(domain, 401, "bad-credentials", REJECTED_DETAIL)


class CheckBudget:
    """How many bcrypt checks one request may still cause (``/status`` and the indexes ask for every domain)."""

    __slots__ = ("left", "refused")

    def __init__(self, checks: int = 1) -> None:
        self.left = checks
        self.refused = 0
        """Checks asked for past the budget (their domains were left undecided)."""

    def spend(self) -> bool:
        """Take one check; False when none is left."""
        if self.left <= 0:
            self.refused += 1
            return False
        self.left -= 1
        return True
