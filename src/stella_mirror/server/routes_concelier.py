"""Concelier routes: the signed index and each domain's manifest, bundle and signatures (S3, DESIGN §3).

    GET|HEAD /concelier/exports[/@<exportId>]/index.json (+ .jws, .sig)
    GET|HEAD /concelier/exports[/@<exportId>]/mirror/<domain>/manifest.json | bundle.json (+ .jws, .sig)

Every response names the export it came from in ``X-Mirror-Export-Id``; a consumer that reads the index
once and then fetches ``/concelier/exports/@<exportId>/mirror/<domain>/…`` gets files of that one export.
"""

from __future__ import annotations

from starlette.types import Scope, Send

from stella_mirror.server.context import RequestContext
from stella_mirror.server.exports import ExportHandle
from stella_mirror.server.middleware.domain import Target
from stella_mirror.server.routes_common import Runtime, answer_from_export, serve_file


async def serve(scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, target: Target) -> None:
    """Answer ``concelier.index`` and ``concelier.file`` targets."""

    async def answer(export: ExportHandle) -> None:
        await serve_file(scope, send, rt, ctx, export, target.parts)

    await answer_from_export(send, rt, "concelier", target.pin, answer)
