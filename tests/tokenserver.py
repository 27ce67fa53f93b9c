"""A client-credentials token endpoint (RFC 6749 §4.4) on loopback for the sync tests: it checks the client's
Basic credentials and the requested scope, and mints short-lived JWTs with :class:`tokens.TokenIssuer`."""

from __future__ import annotations

import base64
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from tokens import TokenIssuer


@dataclass
class TokenEndpoint:
    issuer: TokenIssuer
    client_id: str
    secret: str
    lifetime: int
    url: str = ""
    grants: list[float] = field(default_factory=list)
    refused: int = 0


@contextmanager
def token_endpoint(issuer: TokenIssuer, client_id: str, secret: str, lifetime: int) -> Iterator[TokenEndpoint]:
    ep = TokenEndpoint(issuer, client_id, secret, lifetime)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
            expected = "Basic " + base64.b64encode(f"{ep.client_id}:{ep.secret}".encode()).decode()
            if not hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                ep.refused += 1
                self._answer(401, {"error": "invalid_client"})
                return
            if form.get("grant_type") != ["client_credentials"]:
                self._answer(400, {"error": "unsupported_grant_type"})
                return
            scope = form.get("scope", [""])[0]
            import time

            now = int(time.time())
            exp = now + ep.lifetime
            token = ep.issuer.mint(scope=scope, iat=now, nbf=now - 1, exp=exp)
            ep.grants.append(time.time())
            # Whole seconds left until exp, rounded down, as an Authority answers (exp is whole seconds too).
            self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": int(exp - time.time())})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ep.url = f"http://127.0.0.1:{server.server_address[1]}/connect/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ep
    finally:
        server.shutdown()
        server.server_close()
