"""Concelier routes: the signed index and each domain's manifest, bundle and signatures (S3, DESIGN §3).

    GET|HEAD /concelier/exports[/@<exportId>]/index.json (+ .jws, .sig)
    GET|HEAD /concelier/exports[/@<exportId>]/mirror/<domain>/manifest.json | bundle.json (+ .jws, .sig)

Every response names the export it came from in ``X-Mirror-Export-Id``; a consumer that reads the index
once and then fetches ``/concelier/exports/@<exportId>/mirror/<domain>/…`` gets files of that one export.
"""

from __future__ import annotations

from starlette.types import Scope, Send

from stella_mirror.server.context import RequestContext
from stella_mirror.server.exports import ExportNotFound, RootUnavailable
from stella_mirror.server.middleware.domain import Target
from stella_mirror.server.routes_common import Runtime, export_unavailable, not_found, serve_file
from stella_mirror.server.state import NOT_CONFIGURED


async def serve(scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, target: Target) -> None:
    """Answer ``concelier.index`` and ``concelier.file`` targets."""
    resolver = rt.state().site("concelier").resolver
    if resolver is None:
        await export_unavailable(send, NOT_CONFIGURED)
        return
    for attempt in (1, 2):
        try:
            export = resolver.resolve(target.pin)
        except ExportNotFound as exc:
            await not_found(send, exc.reason)
            return
        except RootUnavailable as exc:
            await export_unavailable(send, str(exc))
            return
        try:
            await serve_file(scope, send, rt, ctx, export, target.parts)
            return
        except ExportNotFound:
            if attempt == 1:
                resolver.forget(export)  # a directory replaced in place: reopen once before answering 404
                continue
            await not_found(send)
