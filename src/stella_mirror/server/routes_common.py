"""What the route modules share: the per-process runtime, export-file serving and parsed-index caching."""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Scope, Send

from stella_mirror.server.context import Product, RequestContext
from stella_mirror.server.exports import ExportHandle, ExportNotFound, RootUnavailable
from stella_mirror.server.files import (
    FileCache,
    Representation,
    Version,
    content_type_for,
    full_response_headers,
    open_representation,
    send_full,
    send_representation,
)
from stella_mirror.server.problems import send_problem
from stella_mirror.server.state import NOT_CONFIGURED, ServerState

NEGOTIABLE = (".json", ".jsonl")
"""Payload names that may have precompressed variants (signatures never do)."""


class JsonCache:
    """Parsed JSON documents (indexes) by file version; bounded."""

    def __init__(self, entries: int = 256) -> None:
        self._docs: OrderedDict[Version, Any] = OrderedDict()
        self._limit = entries

    def get(self, version: Version) -> Any:
        return self._docs.get(version)

    def put(self, version: Version, doc: Any) -> Any:
        self._docs[version] = doc
        if len(self._docs) > self._limit:
            self._docs.popitem(last=False)
        return doc


@dataclass
class Runtime:
    """Per-process objects the routes use; ``state()`` is the current configuration generation."""

    state: Callable[[], ServerState]
    files: FileCache
    json: JsonCache


async def export_unavailable(send: Send, reason: str) -> None:
    await send_problem(send, 503, "export-unavailable", "Export unavailable", reason, {"Retry-After": "30"})


async def not_found(send: Send, detail: str = "not found in this export") -> None:
    await send_problem(send, 404, "not-found", "Not found", detail)


_ROOT_LOG_INTERVAL = 60.0
_root_logged: dict[str, float] = {}


def report_missing_root(product: Product, root: os.PathLike[str] | None) -> None:
    """Log runbook §7's exact line (``Mirror export root is not configured``, the alert greps for it) — and
    which root is missing — at most once a minute per product while requests find no export root."""
    if root is not None and os.path.isdir(root):
        return  # the root is there: another problem (nothing published yet, unreadable), answered 503 with it
    now = time.monotonic()
    if now - _root_logged.get(product, float("-inf")) < _ROOT_LOG_INTERVAL:
        return
    _root_logged[product] = now
    logger = logging.getLogger(f"stella_mirror.{product}")
    logger.error(NOT_CONFIGURED)
    if root is not None:
        logger.error("the configured export root %s does not exist", root)


async def answer_from_export(
    send: Send,
    rt: Runtime,
    product: Product,
    pin: str | None,
    answer: Callable[[ExportHandle], Awaitable[None]],
    *,
    explain_missing: bool = False,
) -> None:
    """Resolve the active (or pinned) export ONCE and let ``answer`` serve the whole response from it.

    An export directory replaced in place shows up as :class:`ExportNotFound` from ``answer``: the
    resolver forgets its cached handle and the request is tried once more before it is a 404.
    ``explain_missing`` puts the lookup's own reason into that 404's detail.
    """
    site = rt.state().site(product)
    resolver = site.resolver
    if resolver is None:
        report_missing_root(product, None)
        await export_unavailable(send, NOT_CONFIGURED)
        return
    for attempt in (1, 2):
        try:
            export = resolver.resolve(pin)
        except ExportNotFound as exc:
            await not_found(send, exc.reason)
            return
        except RootUnavailable as exc:
            report_missing_root(product, site.root)
            await export_unavailable(send, str(exc))
            return
        try:
            await answer(export)
            return
        except ExportNotFound as exc:
            if attempt == 1:
                resolver.forget(export)  # a directory replaced in place: reopen once before answering 404
                continue
            if explain_missing and exc.reason != "not found":
                await not_found(send, exc.reason)
            else:
                await not_found(send)


async def serve_file(
    scope: Scope,
    send: Send,
    rt: Runtime,
    ctx: RequestContext,
    export: ExportHandle,
    parts: tuple[str, ...],
) -> None:
    """Serve ``parts`` of an export, with content negotiation for JSON payloads.

    Raises :class:`ExportNotFound` before anything is sent when the file is not there (the caller answers
    404, or retries once with freshly opened directories).

    The common case — a small file, a request without preconditions or ``Range`` — reuses the representation
    chosen and the response headers built for the same file and ``Accept-Encoding`` within the export's TTL
    (the same time its ``lstat`` results are reused for): one dictionary lookup instead of negotiating,
    looking up validators and building a header list for every request.
    """
    extra = ctx.extra
    negotiate = parts[-1].endswith(NEGOTIABLE)
    key = _memo_key(parts, extra, negotiate)
    memo = export.recall(key)
    rep: Representation
    if memo is not None:
        rep, head = memo  # type: ignore[misc]
    else:
        rep = _open(rt, export, parts, key[1], negotiate)
        head = None
        if rep.body is not None:
            head = full_response_headers(
                rep,
                rt.files,
                content_type_for(parts[-1]),
                [(b"x-mirror-export-id", export.export_id.encode())],
                negotiate,
            )
            export.remember(key, (rep, head))
    try:
        extra["exportId"] = export.export_id
        if rep.encoding:
            extra["encoding"] = rep.encoding
        if head is not None and rep.body is not None and "conditional" not in extra and "range" not in extra:
            await send_full(scope, send, rep.body, head)
            return
        await send_representation(
            scope,
            send,
            rep,
            rt.files,
            content_type_for(parts[-1]),
            [(b"x-mirror-export-id", export.export_id.encode())],
            negotiate,
            "/".join((export.path, *parts[:-1], rep.name)) if export.path and rep.fd is not None else None,
        )
    finally:
        if rep.fd is not None:
            os.close(rep.fd)


def _memo_key(parts: tuple[str, ...], extra: dict[str, Any], negotiate: bool) -> tuple[tuple[str, ...], str | None]:
    """What a memoised answer of :func:`serve_file` is kept under: the file and the ``Accept-Encoding`` that
    chose its representation (only for negotiable payloads)."""
    return (parts, extra.get("accept") if negotiate else None)


def _open(
    rt: Runtime, export: ExportHandle, parts: tuple[str, ...], accept: str | None, negotiate: bool
) -> Representation:
    dir_parts = parts[:-1]

    def lstat(name: str) -> os.stat_result | None:
        return export.lstat_regular(dir_parts, name)

    return open_representation(export.subdir(dir_parts), parts[-1], accept, negotiate, rt.files, lstat)


def read_json(export: ExportHandle, parts: tuple[str, ...], rt: Runtime) -> tuple[Any, float]:
    """A JSON document of an export, parsed once per file version; raises ExportNotFound / ValueError."""
    dir_fd = export.subdir(parts[:-1])
    rep = open_representation(dir_fd, parts[-1], None, False, rt.files)
    try:
        doc = rt.json.get(rep.version)
        if doc is None:
            data = rep.body if rep.body is not None else _read_all(rep)
            doc = rt.json.put(rep.version, orjson.loads(data))
    finally:
        if rep.fd is not None:
            os.close(rep.fd)
    return doc, rep.mtime


def _read_all(rep: Representation) -> bytes:
    assert rep.fd is not None
    return os.pread(rep.fd, rep.version.size, 0)
