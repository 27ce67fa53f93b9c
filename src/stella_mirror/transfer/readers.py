"""Range readers (:data:`stella_mirror.transfer.delta.RangeReader`) over HTTP(S) and S3.

Every URL a reader reads is immutable (pinned to an export id, or an S3 key under one), so range requests go
through a CDN or a caching proxy unchanged. HTTP asks for the identity encoding: byte offsets are those of the
payload, not of a compressed representation.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from stella_mirror.errors import HTTPStatusError, TruncatedError, UnreachableError
from stella_mirror.transfer.delta import RangeReader

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def http_range_reader(client: httpx.Client, path: str) -> RangeReader:
    """Read ``[start, end)`` of ``path`` (relative to the client's base URL) with one ``Range`` request each;
    a server that ignores ``Range`` (``200``) is refused rather than read whole."""

    def read(start: int, end: int) -> bytes:
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        try:
            with client.stream("GET", path, headers=headers) as response:
                if response.status_code != 206:
                    raise HTTPStatusError(f"{client.base_url}{path} (range {start}-{end - 1})", response.status_code)
                m = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                if not m or (int(m.group(1)), int(m.group(2))) != (start, end - 1):
                    raise TruncatedError(f"{client.base_url}{path}: Content-Range does not answer {start}-{end - 1}")
                body = bytearray()
                for block in response.iter_raw(1 << 16):
                    body += block
                    if len(body) > end - start:
                        break
                return bytes(body)
        except httpx.HTTPError as exc:
            raise UnreachableError(f"{client.base_url}{path}: {type(exc).__name__}: {exc}") from None

    return read


def s3_range_reader(s3: Any, bucket: str, key: str) -> RangeReader:
    """Read ``[start, end)`` of an S3 object with ``GetObject Range`` (a boto3 S3 client)."""

    def read(start: int, end: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            body = response["Body"]
            try:
                data: bytes = body.read(end - start + 1)
            finally:
                body.close()
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            raise HTTPStatusError(f"s3://{bucket}/{key} (range {start}-{end - 1})", status) from None
        except BotoCoreError as exc:
            raise UnreachableError(f"s3://{bucket}/{key}: {type(exc).__name__}: {exc}") from None
        return data

    return read
