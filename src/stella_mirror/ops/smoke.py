"""``stella-mirror smoke``: runbook §6 as one command against a running mirror (or the gateway in front).

Checks, in order; the first failure stops the run and names itself:

    index              GET /concelier/exports/index.json: a JSON object with the index keys that lists the domain
    index-signature    its .jws and .sig verify against the key
    manifest-head      HEAD …/mirror/<domain>/manifest.json: 200 with Cache-Control, ETag, Content-Length
    bundle             GET the bundle pinned to the index's export: size and digest as the index says
    bundle-signature   its .jws and .sig (cosign's format) verify against the key, under the index's keyId
    excititor-index    GET /excititor/mirror/<domain>/index: export keys, and index.jws verifies
    cache              with a gateway in front (X-Cache-Status seen): a repeated request is a HIT
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from stella_mirror.bundle.signing import TrustedKeys, verify_blob_sig, verify_detached_jws
from stella_mirror.errors import DigestError, MalformedBundleError, StellaMirrorError
from stella_mirror.ops.remote import CONCELIER_EXPORTS, get

INDEX_KEYS = ("domains", "expiresAt", "exportId", "generatedAt", "schemaVersion", "sequence")
CACHE_HEADER = "x-cache-status"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    """``ok``, ``FAIL`` or ``skip``."""
    detail: str
    exit_code: int = 0

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


class _Run:
    """State shared by the checks of one run."""

    def __init__(self, client: httpx.Client, domain: str, excititor_domain: str, keys: TrustedKeys) -> None:
        self.client = client
        self.domain = domain
        self.excititor_domain = excititor_domain
        self.keys = keys
        self.index: dict[str, Any] = {}
        self.entry: dict[str, Any] = {}
        self.cache_seen: list[str] = []

    def get(self, path: str, method: str = "GET") -> httpx.Response:
        response = get(self.client, path, method)
        status = response.headers.get(CACHE_HEADER)
        if status:
            self.cache_seen.append(status)
        return response

    def check_index(self) -> str:
        body = self.get(f"{CONCELIER_EXPORTS}/index.json").content
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedBundleError("index.json", "not JSON") from None
        missing = [k for k in INDEX_KEYS if not isinstance(doc, dict) or k not in doc]
        if missing:
            raise MalformedBundleError("index.json", f"missing keys {', '.join(missing)}")
        self.index = doc
        listed = [d.get("domainId") for d in doc["domains"] if isinstance(d, dict)]
        entry = next((d for d in doc["domains"] if isinstance(d, dict) and d.get("domainId") == self.domain), None)
        if entry is None:
            raise MalformedBundleError("index.json", f"does not list domain {self.domain} (lists {listed})")
        self.entry = entry
        return f"keys {', '.join(sorted(doc))}; export {doc['exportId']} sequence {doc['sequence']}; domains {listed}"

    def check_index_signature(self) -> str:
        body = self.get(f"{CONCELIER_EXPORTS}/index.json").content
        jws = self.get(f"{CONCELIER_EXPORTS}/index.json.jws").content
        sig = self.get(f"{CONCELIER_EXPORTS}/index.json.sig").content
        kid = verify_detached_jws(jws, body, self.keys, "index.json.jws")
        verify_blob_sig(sig, body, self.keys, "index.json.sig")
        return f"JWS and .sig verify (key {kid})"

    def check_manifest_head(self) -> str:
        r = self.get(f"{CONCELIER_EXPORTS}/mirror/{self.domain}/manifest.json", "HEAD")
        missing = [h for h in ("cache-control", "etag", "content-length") if h not in r.headers]
        if missing:
            raise MalformedBundleError("manifest.json", f"HEAD lacks {', '.join(missing)}")
        return f"200, Cache-Control: {r.headers['cache-control']}, ETag {r.headers['etag']}"

    def _bundle_path(self) -> str:
        return f"{CONCELIER_EXPORTS}/@{self.index['exportId']}/mirror/{self.domain}/bundle.json"

    def check_bundle(self) -> str:
        ref = self.entry.get("bundle") or {}
        data = self.get(self._bundle_path()).content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if len(data) != ref.get("sizeBytes") or digest != ref.get("digest"):
            raise DigestError(
                "bundle.json",
                f"{len(data)} bytes {digest}, the index says {ref.get('sizeBytes')} bytes {ref.get('digest')}",
            )
        return f"{len(data)} bytes, {digest}"

    def check_bundle_signature(self) -> str:
        data = self.get(self._bundle_path()).content
        jws = self.get(self._bundle_path() + ".jws").content
        sig = self.get(self._bundle_path() + ".sig").content
        kid = verify_detached_jws(jws, data, self.keys, "bundle.json.jws")
        verify_blob_sig(sig, data, self.keys, "bundle.json.sig")
        listed = ((self.entry.get("bundle") or {}).get("signature") or {}).get("keyId")
        if listed != kid:
            raise MalformedBundleError("bundle.json.jws", f"signed by {kid}, the index names {listed}")
        return f"JWS and .sig verify (key {kid})"

    def check_excititor_index(self) -> str:
        base = f"/excititor/mirror/{self.excititor_domain}"
        body = self.get(f"{base}/index").content
        jws = self.get(f"{base}/index.jws").content
        verify_detached_jws(jws, body, self.keys, "index.jws")
        try:
            keys = [e["exportKey"] for e in orjson.loads(body)["exports"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise MalformedBundleError("excititor index", "no exports[].exportKey") from None
        if not keys:
            raise MalformedBundleError("excititor index", "lists no export")
        return f"export keys {keys}; index.jws verifies"

    def check_cache(self) -> str | None:
        if not self.cache_seen:
            return None
        path = f"{CONCELIER_EXPORTS}/mirror/{self.domain}/manifest.json"
        first = self.get(path, "HEAD").headers.get(CACHE_HEADER, "")
        second = self.get(path, "HEAD").headers.get(CACHE_HEADER, "")
        if first == "BYPASS" and second == "BYPASS":
            return "X-Cache-Status BYPASS (credentials only the origin checks are never cached)"
        if second != "HIT":
            raise MalformedBundleError("X-Cache-Status", f"a repeated request was {second or 'missing'}, not HIT")
        return f"X-Cache-Status {first} then HIT"


def run_smoke(
    client: httpx.Client, domain: str, keys: TrustedKeys, excititor_domain: str | None = None
) -> list[CheckResult]:
    """Run the checks in order; stops at the first failure (the last result)."""
    run = _Run(client, domain, excititor_domain or domain, keys)
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("index", run.check_index),
        ("index-signature", run.check_index_signature),
        ("manifest-head", run.check_manifest_head),
        ("bundle", run.check_bundle),
        ("bundle-signature", run.check_bundle_signature),
        ("excititor-index", run.check_excititor_index),
        ("cache", run.check_cache),
    ]
    results: list[CheckResult] = []
    for name, check in checks:
        try:
            detail = check()
        except StellaMirrorError as exc:
            results.append(CheckResult(name, "FAIL", str(exc), exc.exit_code))
            break
        if detail is None:
            results.append(CheckResult(name, "skip", "no X-Cache-Status in any answer: no gateway in front"))
        else:
            results.append(CheckResult(name, "ok", detail))
    return results
