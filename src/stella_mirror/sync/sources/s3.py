"""``s3://bucket/prefix``: an export directory stored as objects (the runbook's ``<product>/latest`` prefix),
through boto3 against any S3 API endpoint.

* Credentials: ``accessKeyIdFile``/``secretAccessKeyFile`` (e.g. under ``/run/secrets``), else boto3's
  standard chain (environment, shared files, instance or web-identity roles). ``endpointUrl`` (or
  ``AWS_ENDPOINT_URL``) and ``region`` select the endpoint.
* Probe: one ``HEAD`` of ``mirror/index.json`` (Concelier: its ETag), or one ``LIST`` of ``mirror/``
  (Excititor: the ETags of every domain's index) — one request when nothing changed.
* The listing (one ``LIST`` per thousand objects, at most once a run) also tells which detached
  signatures equal the served ones: same size and an ETag equal to the local file's MD5 (single-part
  uploads; the ETag of a multipart upload is not an MD5, and such a file is simply downloaded).
* Each download asks for a byte range no longer than the cap, so nothing beyond it is ever read.

boto3's own retries are off: :mod:`stella_mirror.sync.retry` is the one retry policy, and the requests
counted at the endpoint are the requests made. Clients come from one botocore session per process (boto3's
core, the same credential chain and endpoint resolution): its service model is loaded once for every job, and
boto3's module itself — which imports its transfer manager, a tenth of a second of every run — is not needed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stella_mirror.bundle.layout import CONCELIER_INDEX, canonical_relpath, index_paths
from stella_mirror.errors import ConfigError, HTTPStatusError, SourceError, TruncatedError, UnreachableError
from stella_mirror.secretfile import read_secret
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.sources.interface import CHUNK, Body, StreamSource, Want


@functools.cache
def _client(region: str | None, endpoint_url: str | None, timeout: float, creds: tuple[tuple[str, str], ...]) -> Any:
    """One S3 client per endpoint, region and credentials, from one botocore session per process: jobs that
    read the same bucket (the runbook's two prefixes) share it — a client costs ~40 ms to build. botocore
    clients are thread-safe, and jobs run in threads."""
    from botocore.config import Config
    from botocore.session import get_session

    config = Config(retries={"total_max_attempts": 1}, connect_timeout=timeout, read_timeout=timeout)
    return get_session().create_client(
        "s3", region_name=region, endpoint_url=endpoint_url, config=config, **dict(creds)
    )


def s3_range_unsatisfiable(exc: Exception) -> bool:
    """Whether a botocore error is S3's answer to a Range past the object's end (416)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return str(exc.response.get("Error", {}).get("Code", "")) == "InvalidRange" or status == 416


def s3_error(exc: Exception, url: str, what: str, key_path: str) -> Exception:
    """The one translation of botocore's exceptions into ours, for the sync's source and ``publish``'s target
    (``key_path`` names the setting a credential problem belongs to); anything else is returned unchanged."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            return FileNotFoundError(what)
        if code == "NoSuchBucket":
            return SourceError(f"{url}: no such bucket")
        return HTTPStatusError(f"{url}: {what} ({code})", status)
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return UnreachableError(f"{url}: {type(exc).__name__}")
    if isinstance(exc, BotoCoreError):
        if "credential" in type(exc).__name__.lower():
            return ConfigError(key_path, f"{url}: no usable AWS credentials ({type(exc).__name__})")
        return UnreachableError(f"{url}: {type(exc).__name__}")
    return exc


class S3Source(StreamSource):
    def __init__(self, bucket: str, prefix: str, options: SourceOptions, url: str) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        creds: tuple[tuple[str, str], ...] = ()
        if options.access_key_id_file is not None and options.secret_access_key_file is not None:
            creds = (
                ("aws_access_key_id", read_secret(options.access_key_id_file, "accessKeyIdFile")),
                ("aws_secret_access_key", read_secret(options.secret_access_key_file, "secretAccessKeyFile")),
            )
        self.timeout = options.timeout_seconds
        self.min_rate = options.min_bytes_per_second
        self.client: Any = _client(options.region, options.endpoint_url, options.timeout_seconds, creds)
        self._listing: dict[str, tuple[int, str]] | None = None

    # --- requests, with botocore's exceptions turned into ours ------------------------------------------

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            if s3_range_unsatisfiable(exc):
                return None
            raise s3_error(exc, self.url, what, "source") from None

    def listing(self) -> dict[str, tuple[int, str]]:
        """Every object under the prefix: relative path → (size, ETag without quotes); once a run."""
        if self._listing is None:
            listing: dict[str, tuple[int, str]] = {}
            token: str | None = None
            while True:
                extra = {"ContinuationToken": token} if token else {}
                page = self._call("LIST", self.client.list_objects_v2, Prefix=self.prefix, **extra)
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    if not canonical_relpath(rel):  # mirror//index.json, ./x: never normalised into a path
                        raise SourceError(f"{self.url}: object key {obj['Key']!r} is not a canonical path")
                    listing[rel] = (int(obj["Size"]), str(obj["ETag"]).strip('"'))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
            self._listing = listing
        return self._listing

    # --- the interface --------------------------------------------------------------------------------

    def probe(self, kind: str, previous: str | None) -> str:
        self._listing = None  # a probe starts a run: list afresh when needed
        if kind == "concelier":
            try:
                head = self._call("HEAD mirror/index.json", self.client.head_object, Key=self.prefix + CONCELIER_INDEX)
            except FileNotFoundError:
                return "absent"
            return str(head.get("ETag", "")).strip('"')
        listing = self.listing()
        rels = index_paths(kind, listing)
        return hashlib.sha256(repr([(r, listing[r]) for r in rels]).encode()).hexdigest()

    def index_files(self, kind: str) -> dict[str, bytes]:
        return self.read_indexes([CONCELIER_INDEX] if kind == "concelier" else index_paths(kind, self.listing()))

    def open(self, want: Want, offset: int) -> Body | None:
        rel, limit = want.rel, want.max_size + 1 - offset
        if offset == 0 and want.local is not None and self._same(rel, want.local):
            return None
        resp = self._call(
            f"GET {rel}", self.client.get_object, Key=self.prefix + rel, Range=f"bytes={offset}-{offset + limit - 1}"
        )
        if resp is None:  # the range starts at or past the end: nothing more to read
            return Body(iter(()), 0)
        stream = resp["Body"]
        return Body(self._chunks(stream, rel), int(resp.get("ContentLength") or 0), stream.close)

    def _chunks(self, stream: Any, rel: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            yield from stream.iter_chunks(CHUNK)
        except (BotoCoreError, OSError) as exc:
            raise TruncatedError(f"{self.url}: {rel}: the transfer broke off ({type(exc).__name__})") from None

    def _same(self, rel: str, local: Path) -> bool:
        remote = self.listing().get(rel)
        if remote is None or "-" in remote[1]:
            return False
        try:
            if local.stat().st_size != remote[0]:
                return False
            return hashlib.md5(local.read_bytes(), usedforsecurity=False).hexdigest() == remote[1]
        except OSError:
            return False

    def close(self) -> None:
        """Nothing to release: the client is shared with other jobs (and the next run of ``--watch``) and keeps
        its connections for them until the process ends."""
