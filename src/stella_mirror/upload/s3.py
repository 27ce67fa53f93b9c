"""``s3://bucket/prefix``: an export root in a bucket, laid out for ``sync --source s3://bucket/prefix/latest``.

S3 has no symlinks and no rename, so the export root the sync reads is laid out as::

    <prefix>/<exportId>/mirror/…   every kept export, complete and never rewritten (``--keep``)
    <prefix>/latest/mirror/…       a copy of the active export: what ``sync --source s3://bucket/<prefix>/latest``
                                   reads (the runbook's ``s3://mirror-stellaops/concelier/latest``)

A publish (1) uploads the new export into its own ``<exportId>/`` prefix, which no mirror reads, in plan order;
(2) switches ``latest/`` by server-side copies from there, in plan order — payloads, manifests, per-domain
indexes, each index's ``.sig`` and ``.jws``, the index last; (3) deletes from ``latest/`` what the new export
does not have; (4) deletes the exports beyond ``keep``. The bytes travel once, in step 1; step 2 is a few
copy requests, so ``latest/`` is mixed for milliseconds, not for the upload (docs/publish.md).

An object is skipped, or used as a copy source, only when its ``sha256`` metadata — written by this module with
the object, whose upload S3 checked against the same digest (``x-amz-checksum-sha256``) — and its size are
those of the file; objects written by anything else (``aws s3 sync``) are never taken as identical. The S3
client is the sync's (:mod:`stella_mirror.sync.sources.s3`: endpoint, region, credentials from files or the
standard chain); every request goes through the sync's retry policy.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from stella_mirror.bundle.layout import LATEST
from stella_mirror.errors import ConfigError, DigestError, SourceError
from stella_mirror.publish import check_export_id
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.retry import with_retries
from stella_mirror.sync.sources.interface import Source
from stella_mirror.sync.sources.s3 import s3_error
from stella_mirror.upload.plan import Item, Plan
from stella_mirror.upload.target import CURRENT, Outcome, Target, check_not_older

T = TypeVar("T")
META = "sha256"
"""User metadata holding the object's SHA-256 (hex): ``x-amz-meta-sha256``."""
MAX_PUT = 5 << 30
"""The largest object one PUT (and one server-side copy) may create."""
_TYPES = {
    ".json": "application/json",
    ".jws": "application/jose",
    ".sig": "text/plain",
    ".jsonl": "application/x-ndjson",
}


def content_type(rel: str) -> str:
    return _TYPES.get(os.path.splitext(rel)[1], "application/octet-stream")


class S3Target(Target):
    parallel = 4
    """Requests in flight within one wave of the plan (files of one wave never depend on each other)."""

    def __init__(self, bucket: str, prefix: str, options: SourceOptions, url: str) -> None:
        from stella_mirror.sync.sources.s3 import S3Source

        self.url = url
        self.bucket = bucket
        self.base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.sync_source = f"s3://{bucket}/{self.base}{LATEST}"
        self._reader = S3Source(bucket, self.base + LATEST, options, self.sync_source)
        self.client: Any = self._reader.client
        self._lock = threading.Lock()

    def reader(self) -> Source:
        return self._reader

    # --- requests, retried, with botocore's exceptions turned into ours --------------------------------

    def _call(self, what: str, request: Callable[[], T]) -> T:
        def once() -> T:
            try:
                return request()
            except Exception as exc:
                raise s3_error(exc, self.url, what, "--to") from None

        return with_retries(once)

    def _list(self, prefix: str) -> dict[str, tuple[int, datetime]]:
        """Every object under ``prefix``: path relative to it → (size, last modified)."""
        out: dict[str, tuple[int, datetime]] = {}
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page: dict[str, Any] = self._call(
                f"LIST {prefix}",
                lambda extra=extra: self.client.list_objects_v2(  # type: ignore[misc]
                    Bucket=self.bucket, Prefix=prefix, **extra
                ),
            )
            for obj in page.get("Contents", []):
                out[obj["Key"][len(prefix) :]] = (int(obj["Size"]), obj["LastModified"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return out

    def _heads(self, prefix: str, rels: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """Size and ``sha256`` metadata of each existing object ``prefix + rel`` (one HEAD each)."""
        out: dict[str, tuple[int, str | None]] = {}

        def head(rel: str) -> None:
            key = prefix + rel
            try:
                resp = self._call(f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
            except FileNotFoundError:
                return
            with self._lock:
                out[rel] = (int(resp["ContentLength"]), resp.get("Metadata", {}).get(META))

        self._each(list(rels), head)
        return out

    def _put(self, item: Item, path: Path, key: str) -> None:
        if item.size > MAX_PUT:
            raise SourceError(f"{self.url}: {item.rel}: {item.size} bytes, above the 5 GiB a single PUT may create")
        checksum = base64.b64encode(bytes.fromhex(item.sha256)).decode()

        def request() -> Any:
            with path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size != item.size:
                    raise DigestError(item.rel, "the local file changed after it was verified")
                return self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=fh,
                    ContentLength=item.size,
                    ContentType=content_type(item.rel),
                    Metadata={META: item.sha256},
                    ChecksumSHA256=checksum,
                )

        self._call(f"PUT {key}", request)

    def _copy(self, src: str, dest: str) -> None:
        self._call(
            f"COPY {src} -> {dest}",
            lambda: self.client.copy_object(
                Bucket=self.bucket, Key=dest, CopySource={"Bucket": self.bucket, "Key": src}, MetadataDirective="COPY"
            ),
        )

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            resp: dict[str, Any] = self._call(
                f"DELETE {len(batch)} objects",
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                ),
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise SourceError(f"{self.url}: DELETE {first.get('Key')}: {first.get('Code')} ({len(errors)} failed)")

    def _each(self, items: list[Any], fn: Callable[[Any], None]) -> None:
        """``fn`` on every item, a few at a time; the first failure is raised once all have stopped."""
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="publish-s3") as pool:
            futures = [pool.submit(fn, item) for item in items]
            for future in futures:
                future.result()

    # --- the publish ------------------------------------------------------------------------------------

    def publish(self, plan: Plan, keep: int, reporter: Reporter) -> Outcome:
        check_not_older(self._reader, plan, self.sync_source)
        stage, live = f"{self.base}{plan.export_id}/", f"{self.base}{LATEST}/"
        out = Outcome(self.url, self.sync_source, plan.export_id, plan.sequence)
        wanted = {item.rel: item for item in plan.items}
        live_objects, stage_objects = self._list(live), self._list(stage)
        live_heads = self._heads(live, [r for r in wanted if r in live_objects])
        stage_heads = self._heads(stage, [r for r in wanted if r in stage_objects])
        # Any object shown to hold a file's bytes can be copied server-side instead of uploading them again.
        sources = {
            (sha, size): prefix + rel
            for prefix, heads in ((live, live_heads), (stage, stage_heads))
            for rel, (size, sha) in heads.items()
            if sha
        }

        def same(heads: dict[str, tuple[int, str | None]], item: Item) -> bool:
            return heads.get(item.rel) == (item.size, item.sha256)

        def stage_one(item: Item) -> None:
            key = stage + item.rel
            with self._lock:
                source = sources.get((item.sha256, item.size))
            if source is not None:
                self._copy(source, key)
            else:
                self._put(item, plan.export_dir / item.rel, key)
                reporter.advance(self.url, item.size)
            with self._lock:
                if source is not None:
                    out.files_copied += 1
                else:
                    out.files_uploaded += 1
                    out.bytes_uploaded += item.size
                sources.setdefault((item.sha256, item.size), key)

        # 1. the new export under its own prefix, which no mirror reads
        to_put = [i for i in plan.items if not same(stage_heads, i) and (i.sha256, i.size) not in sources]
        reporter.start_transfer(self.url, sum(i.size for i in to_put))
        try:
            for wave in plan.waves():
                self._each([i for i in wave if not same(stage_heads, i)], stage_one)
        finally:
            reporter.end_transfer(self.url)
        reporter.event(
            "staged",
            target=f"s3://{self.bucket}/{stage}",
            filesUploaded=out.files_uploaded,
            bytesUploaded=out.bytes_uploaded,
            filesCopied=out.files_copied,
        )
        # 2. latest/ switched in plan order, by server-side copies: payloads … each index's signatures, the index
        switched = 0
        for wave in plan.waves():
            todo = [i for i in wave if not same(live_heads, i)]
            self._each(todo, lambda i: self._copy(stage + i.rel, live + i.rel))
            switched += len(todo)
        out.files_unchanged = len(plan.items) - switched
        reporter.event("switched", target=self.sync_source, exportId=plan.export_id, filesCopied=switched)
        # 3. what the new index no longer names, once it is in place; 4. exports beyond keep
        stale = sorted(rel for rel in live_objects if rel not in wanted)
        # (and what an interrupted earlier run of this export id left under its prefix that is not part of it)
        self._delete([live + rel for rel in stale] + sorted(stage + rel for rel in stage_objects if rel not in wanted))
        out.files_removed = len(stale)
        out.exports_removed = self._prune(keep, plan.export_id)
        if switched == 0 and not stale and out.files_uploaded == out.files_copied == 0:
            out.state = CURRENT
        return out

    def _prune(self, keep: int, active: str) -> list[str]:
        """Delete the oldest exports beyond ``keep`` (never ``active``); only prefixes that hold an export
        (``<id>/mirror/…``) count, so nothing else kept under the prefix is touched."""
        objects = self._list(self.base)
        newest: dict[str, datetime] = {}
        for rel, (_, modified) in objects.items():
            top, _, rest = rel.partition("/")
            try:
                check_export_id(top)
            except ConfigError:
                continue  # latest/, or not an export
            if rest.startswith("mirror/"):
                newest[top] = max(newest.get(top, modified), modified)
        others = sorted((e for e in newest if e != active), key=lambda e: (newest[e], e))
        doomed = others[: max(0, len(others) - (keep - 1))]
        self._delete(sorted(self.base + rel for rel in objects if rel.partition("/")[0] in doomed))
        return doomed
