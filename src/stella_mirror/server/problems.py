"""RFC 9457 problem details: every error response of the server is ``application/problem+json``.

``type`` values are stable URIs under :data:`TYPE_BASE`, so clients can branch on them.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response
from starlette.types import Send

TYPE_BASE = "https://stella-ops.org/problems/"
MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, slug: str, title: str, detail: str = "", instance: str = "") -> bytes:
    body: dict[str, object] = {"type": TYPE_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    return orjson.dumps(body)


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    headers: Mapping[str, str] | None = None,
    instance: str = "",
) -> Response:
    """A problem+json response. ``detail`` must never carry a secret."""
    return Response(
        problem_body(status, slug, title, detail, instance),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}, **{"Cache-Control": "no-store"}),
    )


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    headers: Mapping[str, str] | None = None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Raw ASGI headers and body of a problem response (``detail`` must never carry a secret)."""
    body = problem_body(status, slug, title, detail)
    raw_headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return raw_headers, body


async def send_uncached(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    """Send a whole small response that must not be cached (a problem, a health answer) from raw ASGI."""
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_problem(
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send a problem response from raw ASGI middleware (no Request object needed)."""
    raw_headers, body = problem_response(status, slug, title, detail, headers)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
