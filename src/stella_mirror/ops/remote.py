"""Talking to a running mirror as a consumer would, for ``smoke`` and ``verify URL``: credentials from files,
curl's ``--resolve`` and ``--cacert``, and fetching a Concelier export into a directory the verifier reads."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from stella_mirror.errors import ConfigError, DigestError, HTTPStatusError, MalformedBundleError, UnreachableError
from stella_mirror.secretfile import read_secret

CONCELIER_EXPORTS = "/concelier/exports"
_RESOLVE = re.compile(r"^([A-Za-z0-9.-]+):([0-9]{1,5}):(\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.:-]+)$")


@dataclass(frozen=True)
class Resolve:
    """curl's ``--resolve HOST:PORT:ADDR``: connect to ADDR for HOST:PORT, keeping HOST for SNI and Host."""

    host: str
    port: int
    address: str

    @classmethod
    def parse(cls, value: str) -> Resolve:
        m = _RESOLVE.match(value)
        if not m:
            raise ConfigError("--resolve", f"{value!r} is not HOST:PORT:ADDRESS")
        return cls(m.group(1).lower(), int(m.group(2)), m.group(3).strip("[]"))


@dataclass(frozen=True)
class Remote:
    """Where and as whom to connect."""

    base_url: str
    user: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None
    resolve: Resolve | None = None
    cacert: Path | None = None
    timeout: float = 30.0

    def client(self) -> httpx.Client:
        """An HTTP client with the credentials (read from their files now, never printed)."""
        headers: dict[str, str] = {"User-Agent": "stella-mirror"}
        auth: tuple[str, str] | None = None
        if self.token_file is not None:
            headers["Authorization"] = "Bearer " + read_secret(self.token_file, "--token-file")
        elif self.user is not None:
            if self.password_file is None:
                raise ConfigError("--password-file", "a user needs a password file")
            auth = (self.user, read_secret(self.password_file, "--password-file"))
        verify: ssl.SSLContext | bool = True
        if self.cacert is not None:
            try:
                verify = ssl.create_default_context(cafile=str(self.cacert))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("--cacert", f"cannot load {self.cacert}: {exc}") from None
        hooks = {"request": [self._resolve]} if self.resolve is not None else {}
        return httpx.Client(
            base_url=self.base_url.rstrip("/"),
            headers=headers,
            auth=auth,
            verify=verify,
            timeout=self.timeout,
            event_hooks=hooks,
        )

    def _resolve(self, request: httpx.Request) -> None:
        r = self.resolve
        assert r is not None
        if request.url.host.lower() == r.host and (request.url.port or _default_port(request.url)) == r.port:
            request.headers["Host"] = request.url.netloc.decode("ascii")
            request.extensions["sni_hostname"] = r.host
            request.url = request.url.copy_with(host=r.address)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def get(client: httpx.Client, path: str, method: str = "GET") -> httpx.Response:
    """One request; a transport failure is :class:`UnreachableError`, a non-2xx status :class:`HTTPStatusError`."""
    try:
        response = client.request(method, path)
    except httpx.HTTPError as exc:
        raise UnreachableError(f"{client.base_url}{path}: {type(exc).__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise HTTPStatusError(f"{client.base_url}{path}", response.status_code)
    return response


def fetch_concelier(client: httpx.Client, into: Path) -> Path:
    """Download the index the mirror gives this caller, its signatures, and every file it lists (what
    :func:`stella_mirror.bundle.layout.listed_files` names: manifests, bundles and their signatures, each domain's
    own index when the mirror has one) pinned to the index's export, into ``into`` laid out as an export directory
    for the verifier. No download reads past its signed size (signatures and the index past their caps)."""
    from stella_mirror.bundle.layout import listed_files, route
    from stella_mirror.sync.sources.interface import INDEX_CAP, SIGNATURE_CAP

    _download(client, f"{CONCELIER_EXPORTS}/index.json", into / "mirror" / "index.json", INDEX_CAP)
    for suffix in (".jws", ".sig"):
        _download(client, f"{CONCELIER_EXPORTS}/index.json{suffix}", into / f"mirror/index.json{suffix}", SIGNATURE_CAP)
    try:
        doc = orjson.loads((into / "mirror" / "index.json").read_bytes())
        export_id = str(doc["exportId"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise MalformedBundleError("mirror/index.json", "not a Concelier index") from None
    for item in listed_files({"mirror/index.json": doc}):
        names = [(item.rel, item.size)]
        if item.signed:
            names += [(item.rel + suffix, SIGNATURE_CAP) for suffix in (".jws", ".sig")]
        for name, cap in names:
            path = route("concelier", name, export_id).url
            try:
                _download(client, path, into / name, cap)
            except HTTPStatusError as exc:
                if not (item.optional and exc.status == 404):
                    raise
    return into


def _download(client: httpx.Client, path: str, target: Path, cap: int) -> None:
    """Stream ``path`` into ``target``, refusing more than ``cap`` bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    received = 0
    try:
        with client.stream("GET", path) as response:
            if response.status_code != 200:
                raise HTTPStatusError(f"{client.base_url}{path}", response.status_code)
            with target.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    received += len(chunk)
                    if received > cap:
                        raise DigestError(target.name, f"{client.base_url}{path} is larger than {cap} bytes")
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise UnreachableError(f"{client.base_url}{path}: {type(exc).__name__}: {exc}") from None
