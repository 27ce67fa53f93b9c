"""Bearer tokens for an upstream mirror: a static token from a file, or the OAuth 2.0 client-credentials
grant (RFC 6749 §4.4) against an Authority — the runbook's ``concelier-authority-client`` secret.

The token is kept in memory and fetched again shortly before it expires (``MARGIN`` seconds early, or a
fifth of its lifetime early for short-lived ones), or at once when the upstream answers 401 to it (revoked, or a clock
off). The client secret is read from its file for each grant and never logged; errors name the token
URL and the status, never a secret.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx

from stella_mirror.errors import HTTPStatusError, SourceError, UnreachableError
from stella_mirror.secretfile import read_secret

MARGIN = 30.0


class ClientCredentials:
    """Tokens from a token endpoint, cached until shortly before they expire."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        secret_file: Path,
        scope: str | None,
        client: httpx.Client,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.secret_file = secret_file
        self.scope = scope
        self.client = client
        self.clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self.grants = 0
        """How many tokens were fetched (for tests and logs)."""

    def token(self, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or self.clock() >= self._refresh_at:
                self._grant()
            assert self._token is not None
            return self._token

    def _grant(self) -> None:
        secret = read_secret(self.secret_file, "clientSecretFile")
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        started = self.clock()
        try:
            resp = self.client.post(self.token_url, data=data, auth=(self.client_id, secret))
        except httpx.TransportError as exc:
            raise UnreachableError(f"{self.token_url}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise HTTPStatusError(self.token_url, resp.status_code)
        try:
            body = resp.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"{self.token_url}: not a token response") from None
        if str(body.get("token_type", "Bearer")).lower() != "bearer":
            raise SourceError(f"{self.token_url}: token type {body.get('token_type')!r} is not Bearer")
        self._token = token
        self._refresh_at = started + lifetime - min(MARGIN, lifetime / 5)
        self.grants += 1


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` from a provider; one retry with a fresh token after a 401."""

    def __init__(self, token: Callable[[bool], str]) -> None:
        self.get_token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.get_token(False)}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.get_token(True)}"
            yield request
