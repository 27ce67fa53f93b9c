"""Excititor routes: the domain list, each domain's signed index, export metadata and artifacts (S4).

    GET /excititor/mirror/domains                  the domains the caller may read on this host + index summaries
    GET /excititor/mirror[/@<id>]/<domain>/index (+ index.jws, index.sig)   the domain's index.json bytes
        alias /excititor/mirror/domains/<domain>/index
    GET /excititor/mirror[/@<id>]/<domain>/exports/<exportKey>              the index entry (JSON)
    GET /excititor/mirror[/@<id>]/<domain>/exports/<exportKey>/download     the artifact bytes
        …/download.jws, …/download.sig                                    its detached JWS and .sig

The artifact's location comes from the signed index entry (``path``, relative to the domain directory);
each of its segments is checked like a request segment before anything is opened.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.types import Scope, Send

from stella_mirror.bundle.layout import safe_segment
from stella_mirror.server.context import DomainPolicy, RequestContext
from stella_mirror.server.exports import ExportHandle, ExportNotFound
from stella_mirror.server.files import send_bytes
from stella_mirror.server.middleware.domain import Target, request_host
from stella_mirror.server.routes_common import Runtime, answer_from_export, export_unavailable, read_json, serve_file
from stella_mirror.server.visibility import readable, restricted, served_on

JSON = b"application/json"


def _entry(index: Any, export_key: str) -> dict[str, Any] | None:
    exports = index.get("exports") if isinstance(index, dict) else None
    if not isinstance(exports, list):
        return None
    for entry in exports:
        if isinstance(entry, dict) and entry.get("exportKey") == export_key:
            return entry
    return None


def _summary(doc: Any) -> dict[str, Any] | None:
    if not isinstance(doc, dict):
        return None
    raw = doc.get("exports")
    exports: list[Any] = raw if isinstance(raw, list) else []
    return {
        "exportId": doc.get("exportId"),
        "sequence": doc.get("sequence"),
        "generatedAt": doc.get("generatedAt"),
        "expiresAt": doc.get("expiresAt"),
        "exportCount": len(exports),
        "exportKeys": [e.get("exportKey") for e in exports if isinstance(e, dict)],
    }


async def serve(
    scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, target: Target, authorization: str | None = None
) -> None:
    """Answer every ``excititor.*`` target."""
    shown: list[DomainPolicy] = []
    if target.handler == "excititor.domains":
        # Decided before the export is resolved: its handle is only valid until the next await.
        state = rt.state()
        shown = served_on(state, "excititor", request_host(ctx))
        if restricted(state, "excititor"):
            allowed = await readable(state, "excititor", request_host(ctx), authorization)
            shown = [p for p in shown if p.domain_id in allowed]

    async def answer(export: ExportHandle) -> None:
        if target.handler == "excititor.index":
            await serve_file(scope, send, rt, ctx, export, target.parts)
        elif target.handler == "excititor.domains":
            await _domains(scope, send, rt, ctx, export, shown)
        else:
            await _export(scope, send, rt, ctx, target, export)

    await answer_from_export(send, rt, "excititor", target.pin, answer, explain_missing=True)


async def _export(
    scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, target: Target, export: ExportHandle
) -> None:
    assert target.domain_id is not None and target.export_key is not None
    export_id = export.export_id
    try:
        index, mtime = read_json(export, ("mirror", target.domain_id, "index.json"), rt)
    except ValueError:
        await export_unavailable(send, f"the index of domain {target.domain_id} is not valid JSON")
        return
    entry = _entry(index, target.export_key)
    if entry is None:
        raise ExportNotFound(f"no export {target.export_key!r} in domain {target.domain_id}")
    ctx.extra["exportId"] = export_id
    if target.handler == "excititor.export":
        body = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n"
        await send_bytes(
            scope,
            send,
            body,
            hashlib.sha256(body).hexdigest(),
            JSON,
            [(b"x-mirror-export-id", export_id.encode())],
            mtime,
        )
        return
    rel = entry.get("path")
    parts = tuple(rel.split("/")) if isinstance(rel, str) else ()
    if not parts or not all(safe_segment(p) for p in parts):
        raise ExportNotFound(f"export {target.export_key!r} has no servable path")
    parts = ("mirror", target.domain_id, *parts[:-1], parts[-1] + target.suffix)
    await serve_file(scope, send, rt, ctx, export, parts)


async def _domains(
    scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, export: ExportHandle, shown: list[DomainPolicy]
) -> None:
    export_id = export.export_id
    items = []
    for policy in shown:
        try:
            doc, _ = read_json(export, ("mirror", policy.domain_id, "index.json"), rt)
            summary = _summary(doc)
        except (ExportNotFound, ValueError):
            summary = None
        items.append(
            {
                "domainId": policy.domain_id,
                "displayName": policy.display_name,
                "requireAuthentication": policy.require_authentication,
                "index": f"/excititor/mirror/{policy.domain_id}/index",
                "summary": summary,
            }
        )
    body = orjson.dumps({"exportId": export_id, "domains": items}, option=orjson.OPT_SORT_KEYS) + b"\n"
    ctx.extra["exportId"] = export_id
    await send_bytes(
        scope, send, body, hashlib.sha256(body).hexdigest(), JSON, [(b"x-mirror-export-id", export_id.encode())]
    )
