"""What the route modules share: the per-process runtime, export-file serving and parsed-index caching."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Scope, Send

from stella_mirror.server.context import RequestContext
from stella_mirror.server.exports import ExportNotFound, RootUnavailable, open_file
from stella_mirror.server.files import (
    FileCache,
    Representation,
    Version,
    content_type_for,
    open_representation,
    send_representation,
)
from stella_mirror.server.problems import send_problem
from stella_mirror.server.state import ServerState

NEGOTIABLE = (".json", ".jsonl")
"""Payload names that may have precompressed variants (signatures never do)."""


class JsonCache:
    """Parsed JSON documents (indexes) by file version; bounded."""

    def __init__(self, entries: int = 256) -> None:
        self._docs: OrderedDict[Version, Any] = OrderedDict()
        self._limit = entries

    def load(self, fd: int, files: FileCache) -> tuple[Any, Version, float]:
        """Parse the (small) file behind ``fd``; raises ``ValueError`` when it is not JSON."""
        st = os.fstat(fd)
        version = Version(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        doc = self._docs.get(version)
        if doc is None:
            data = os.pread(fd, st.st_size, 0) if st.st_size > 256 * 1024 else files.small(fd, version)[0]
            doc = orjson.loads(data)
            self._docs[version] = doc
            if len(self._docs) > self._limit:
                self._docs.popitem(last=False)
        return doc, version, st.st_mtime


@dataclass
class Runtime:
    """Per-process objects the routes use; ``state()`` is the current configuration generation."""

    state: Callable[[], ServerState]
    files: FileCache
    json: JsonCache
    use_sendfile: bool = False


def accept_encoding(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            return bytes(value).decode("latin-1")
    return None


async def export_unavailable(send: Send, reason: str) -> None:
    await send_problem(send, 503, "export-unavailable", "Export unavailable", reason, {"Retry-After": "30"})


async def not_found(send: Send, detail: str = "not found in this export") -> None:
    await send_problem(send, 404, "not-found", "Not found", detail)


async def serve_file(
    scope: Scope,
    send: Send,
    rt: Runtime,
    ctx: RequestContext,
    dir_fd: int,
    export_id: str,
    parts: tuple[str, ...],
) -> None:
    """Serve ``parts`` under an opened export directory, with negotiation for JSON payloads."""
    negotiate = parts[-1].endswith(NEGOTIABLE)
    try:
        rep: Representation = open_representation(dir_fd, parts, accept_encoding(scope) if negotiate else None,
                                                  negotiate)
    except ExportNotFound as exc:
        await not_found(send, exc.reason if exc.reason != "not found" else "not found in this export")
        return
    try:
        ctx.extra["exportId"] = export_id
        if rep.encoding:
            ctx.extra["encoding"] = rep.encoding
        await send_representation(
            scope, send, rep, rt.files, content_type_for(parts[-1]),
            [(b"x-mirror-export-id", export_id.encode())], negotiate, rt.use_sendfile,
        )
    finally:
        os.close(rep.fd)


def read_json(dir_fd: int, parts: tuple[str, ...], rt: Runtime) -> tuple[Any, float]:
    """A JSON document under an opened export (cached by version); raises ExportNotFound / ValueError."""
    fd = open_file(dir_fd, parts)
    try:
        doc, _, mtime = rt.json.load(fd, rt.files)
    finally:
        os.close(fd)
    return doc, mtime


def index_problem(exc: Exception) -> str:
    if isinstance(exc, RootUnavailable | ExportNotFound):
        return str(exc)
    return "the active index is not valid JSON"

