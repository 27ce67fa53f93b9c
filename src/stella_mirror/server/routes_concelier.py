"""Concelier routes: the signed index and each domain's manifest, bundle and signatures (S3, DESIGN §3).

    GET|HEAD /concelier/exports[/@<exportId>]/index.json (+ .jws, .sig)
    GET|HEAD /concelier/exports[/@<exportId>]/mirror/<domain>/manifest.json | bundle.json (+ .jws, .sig)

Every response names the export it came from in ``X-Mirror-Export-Id``; a consumer that reads the index
once and then fetches ``/concelier/exports/@<exportId>/mirror/<domain>/…`` gets files of that one export.

The index lists only the domains the caller may read (:mod:`stella_mirror.server.visibility`), always in a
signed form when one exists for exactly those domains:

* every listed domain readable: the export's signed ``mirror/index.json``;
* one domain readable: that domain's signed index ``mirror/<domain>/index.json`` (the index restricted to
  it, written by the exporter beside the domain's files) — the usual case on a host that serves one domain;
* otherwise (several but not all, or an export from before per-domain indexes): ``index.json`` is the export's
  index with the other domains left out — unsigned, so ``index.json.jws``/``.sig`` answer 404; the bundles
  and their signatures stay verifiable.

Such answers depend on the caller, so they carry ``Vary: Authorization``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send

from stella_mirror.bundle import canonical
from stella_mirror.server.context import RequestContext
from stella_mirror.server.exports import ExportHandle, ExportNotFound
from stella_mirror.server.middleware.domain import Target, request_host
from stella_mirror.server.routes_common import Runtime, answer_from_export, not_found, read_json, serve_file
from stella_mirror.server.visibility import readable, restricted

INDEX = "index.json"


async def serve(
    scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, target: Target, authorization: str | None = None
) -> None:
    """Answer ``concelier.index`` and ``concelier.file`` targets."""
    state = rt.state()
    if target.handler == "concelier.index" and restricted(state, "concelier"):
        allowed = {p.domain_id for p in await readable(state, "concelier", request_host(ctx), authorization)}

        async def answer_index(export: ExportHandle) -> None:
            await _index(scope, send, rt, ctx, export, target, allowed)

        await answer_from_export(send, rt, "concelier", target.pin, answer_index)
        return

    async def answer(export: ExportHandle) -> None:
        await serve_file(scope, send, rt, ctx, export, target.parts)

    await answer_from_export(send, rt, "concelier", target.pin, answer)


async def _index(
    scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, export: ExportHandle, target: Target, allowed: set[str]
) -> None:
    doc, _ = read_json(export, ("mirror", INDEX), rt)
    entries: list[dict[str, Any]] = [d for d in doc.get("domains", []) if isinstance(d, dict)]
    shown = [d for d in entries if d.get("domainId") in allowed]
    suffix = target.parts[-1].removeprefix(INDEX)  # "", ".jws" or ".sig"
    if len(shown) == len(entries):
        await serve_file(scope, send, rt, ctx, export, target.parts)
        return
    if len(shown) == 1:
        domain_dir = ("mirror", str(shown[0]["domainId"]))
        try:
            own = export.lstat_regular(domain_dir, INDEX + suffix)
        except ExportNotFound:
            own = None
        if own is not None:
            await serve_file(scope, send, rt, ctx, export, (*domain_dir, INDEX + suffix))
            return
    if suffix:
        await not_found(send, "no signed index lists exactly the domains these credentials may read")
        return
    body = canonical.dumps({**doc, "domains": shown})
    ctx.extra["exportId"] = export.export_id
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-mirror-export-id", export.export_id.encode()),
        (b"x-mirror-index", b"filtered-unsigned"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


