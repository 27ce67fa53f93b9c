"""``https://mirror``: an upstream stella-mirror (or any server with the same routes), through httpx (B4).

Index → manifests → bundles and signatures, over the mirror's own routes (the route table of
:func:`stella_mirror.bundle.layout.route`).

The export id is learnt once a run — from ``X-Mirror-Export-Id`` of the Concelier index, or the Excititor
domain list — and every later request pins it (``@<id>``), so a publish upstream during the sync cannot
mix two exports. A server that sends no export id is read unpinned.

* Credentials: Basic (``username`` + ``passwordFile``), a bearer token from ``tokenFile``, or bearer tokens
  from an Authority by the client-credentials grant (``sync/oauth.py``).
* Conditional requests: the probe is ``If-None-Match`` with the last ETag (304: one small request); a
  signature equal to the served one is answered 304 to ``If-None-Match: "<its sha256>"`` (the mirror's
  ETags are the SHA-256 of the bytes).
* Downloads ask for a byte range no longer than the cap; an interrupted one resumes with ``Range`` and
  ``If-Range`` (the signed digest is the file's ETag), and starts again if the server sends it whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from stella_mirror import __name__ as _package
from stella_mirror.bundle import layout
from stella_mirror.bundle.layout import safe_segment
from stella_mirror.bundle.trusted import TrustedIndexSet
from stella_mirror.errors import (
    HTTPStatusError,
    MalformedBundleError,
    MissingAtSourceError,
    SourceError,
    TruncatedError,
    UnreachableError,
)
from stella_mirror.secretfile import read_secret
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.oauth import BearerAuth, ClientCredentials
from stella_mirror.sync.retry import with_retries
from stella_mirror.sync.sources.interface import INDEX_CAP, Body, StreamSource, Want

MAX_REDIRECTS = 5


def _connect_error(where: str, exc: httpx.ConnectError) -> SourceError:
    """A connection failure; a TLS one names the certificate problem (it will not pass on a retry)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return SourceError(f"{where}: TLS certificate not trusted: {cause.verify_message} (caFile gives the CA)")
    if isinstance(cause, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc):
        return SourceError(f"{where}: TLS handshake failed: {getattr(cause, 'reason', None) or exc}")
    return UnreachableError(f"{where}: ConnectError: {exc}")


class HTTPSource(StreamSource):
    def __init__(self, url: str, options: SourceOptions, safe_url: str) -> None:
        self.url = safe_url
        self.base = url.rstrip("/")
        self.client = httpx.Client(
            timeout=options.timeout_seconds,
            verify=str(options.ca_file) if options.ca_file else True,
            headers={"Accept-Encoding": "identity", "User-Agent": f"{_package}-sync/1"},
            follow_redirects=False,  # redirects are followed by _get, within the upstream's origin only
        )
        self.redirects = options.redirects
        self.timeout = options.timeout_seconds
        self.min_rate = options.min_bytes_per_second
        self.tokens: ClientCredentials | None = None
        if options.token_url is not None:
            assert options.client_id is not None and options.client_secret_file is not None
            self.tokens = ClientCredentials(
                options.token_url, options.client_id, options.client_secret_file, options.scope, self.client
            )
            self.client.auth = BearerAuth(self.tokens.token)
        elif options.token_file is not None:
            path = options.token_file
            self.client.auth = BearerAuth(lambda _force: read_secret(path, "tokenFile"))
        elif options.username is not None:
            if options.password_file is None:
                raise SourceError(f"{self.url}: a username needs a passwordFile")
            self.client.auth = httpx.BasicAuth(options.username, read_secret(options.password_file, "passwordFile"))
        self.kind = "concelier"
        self.pin: str | None = None

    # --- paths and requests ---------------------------------------------------------------------------

    def route(self, rel: str) -> str:
        """The URL path of a file of the export (``rel`` comes from a signed index, already checked)."""
        return layout.route(self.kind, rel, self.pin).url

    def _get(self, path: str, headers: dict[str, str] | None = None, stream: bool = False) -> httpx.Response:
        request = self.client.build_request("GET", self.base + path, headers=headers)
        origin = request.url.copy_with(path="/", query=None, fragment=None)
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                response = self.client.send(request, stream=stream)
            except httpx.ConnectError as exc:
                raise _connect_error(f"{self.url}{path}", exc) from None
            except httpx.TransportError as exc:
                raise UnreachableError(f"{self.url}{path}: {type(exc).__name__}") from None
            if not response.is_redirect or response.next_request is None:
                break
            response.close()
            target = response.next_request.url
            if self.redirects == "refuse" or target.copy_with(path="/", query=None, fragment=None) != origin:
                raise SourceError(f"{self.url}{path}: HTTP {response.status_code} redirect refused "
                                  f"({'redirects are off' if self.redirects == 'refuse' else 'to another origin'})")
            request = response.next_request
        else:
            raise SourceError(f"{self.url}{path}: more than {MAX_REDIRECTS} redirects")
        status = response.status_code
        if status in (200, 206, 304, 416):
            return response
        response.close()
        if status in (404, 410):
            raise FileNotFoundError(path)
        if status in (401, 403):
            raise SourceError(f"{self.url}{path}: HTTP {status} (credentials missing, wrong or without the scope)")
        raise HTTPStatusError(f"{self.url}{path}", status)

    # --- the interface --------------------------------------------------------------------------------

    def _probe_path(self, kind: str) -> str:
        return "/concelier/exports/index.json" if kind == "concelier" else "/excititor/mirror/domains"

    def probe(self, kind: str, previous: str | None) -> str:
        self.kind, self.pin = kind, None
        status, headers, body = self._small(self._probe_path(kind), {"If-None-Match": previous} if previous else None)
        if status == 304 and previous is not None:
            return previous
        return headers.get("etag") or '"' + hashlib.sha256(body).hexdigest() + '"'

    def index_files(self, kind: str) -> dict[str, bytes]:
        self.kind, self.pin = kind, None
        _, headers, body = self._small(self._probe_path(kind))
        if kind == "concelier":
            self.pin = headers.get("x-mirror-export-id") or None
            return {"mirror/index.json": body}
        try:
            doc: Any = orjson.loads(body)
            self.pin = str(doc["exportId"]) if doc.get("exportId") else None
            domains = [str(d["domainId"]) for d in doc["domains"] if d.get("summary") is not None]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise SourceError(f"{self.url}/excititor/mirror/domains: not a domain list") from None
        bad = [d for d in domains if not safe_segment(d)]
        if bad:
            raise SourceError(f"{self.url}/excititor/mirror/domains: domain {bad[0]!r} is not a safe path segment")
        return self.read_indexes([f"mirror/{d}/index.json" for d in domains])

    def confirm(self, trust: TrustedIndexSet) -> None:
        """From now on every request is pinned to the export whose signed index verified (the pin learnt from a
        response header was a hint: had it named another export, the index's signature would not have matched)."""
        if trust.accepted is not None:
            self.pin = trust.accepted.export_id

    def _small(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body (at most :data:`INDEX_CAP` bytes) of a GET of an index or domain list."""

        def once() -> tuple[int, httpx.Headers, bytes]:
            try:
                resp = self._get(path, headers, stream=True)
            except FileNotFoundError:
                raise MissingAtSourceError(f"{self.url}{path}: missing at the source (HTTP 404)") from None
            data = bytearray()
            pace = self.pace(path)
            try:
                for chunk in self._chunks(resp, path):
                    data += chunk
                    if len(data) > INDEX_CAP:
                        raise MalformedBundleError(path, f"larger than the {INDEX_CAP} bytes an index may weigh")
                    pace.check(len(data))
            finally:
                resp.close()
            return resp.status_code, resp.headers, bytes(data)

        return with_retries(once)

    def open(self, want: Want, offset: int) -> Body | None:
        limit = want.max_size + 1 - offset
        headers = {"Range": f"bytes={offset}-{offset + limit - 1}"}
        if offset > 0 and want.digest is not None:
            headers["If-Range"] = '"' + want.digest.removeprefix("sha256:") + '"'
        elif offset > 0:
            headers.pop("Range")
        if offset == 0 and want.local is not None:
            with contextlib.suppress(OSError):  # no local copy after all: download
                headers["If-None-Match"] = '"' + hashlib.sha256(want.local.read_bytes()).hexdigest() + '"'

        resp = self._get(self.route(want.rel), headers, stream=True)
        if resp.status_code == 304:
            resp.close()
            return None
        if resp.status_code == 416:
            resp.close()
            return Body(iter(()), 0)
        length = resp.headers.get("content-length")
        start = None if resp.status_code == 206 else 0
        return Body(self._chunks(resp, want.rel), int(length) if length else None, resp.close, start)

    def _chunks(self, resp: httpx.Response, rel: str) -> Iterator[bytes]:
        try:
            yield from resp.iter_bytes()  # as the bytes arrive: a deadline is checked between chunks
        except httpx.TransportError as exc:
            raise TruncatedError(f"{self.url}: {rel}: the transfer broke off ({type(exc).__name__})") from None

    def close(self) -> None:
        self.client.close()
