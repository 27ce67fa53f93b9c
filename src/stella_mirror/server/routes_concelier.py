"""Concelier routes: the signed index and each domain's manifest, bundle and signatures (S3, DESIGN §3).

    GET|HEAD /concelier/exports[/@<exportId>]/index.json (+ .jws, .sig)
    GET|HEAD /concelier/exports[/@<exportId>]/mirror/<domain>/manifest.json | bundle.json | index.json (+ .jws, .sig)

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

Such answers depend on the caller, so they carry ``Vary: Authorization`` (added by the gateway). Which answer a
set of readable domains gets is decided once per export (:func:`index_answer`, remembered for the export's TTL).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send

from stella_mirror.bundle import canonical
from stella_mirror.server.context import RequestContext
from stella_mirror.server.exports import ExportHandle
from stella_mirror.server.middleware.domain import Target, request_host
from stella_mirror.server.routes_common import Runtime, answer_from_export, not_found, read_json, serve_file
from stella_mirror.server.state import WIDE_DOMAIN_ID, ServerState
from stella_mirror.server.visibility import readable, restricted

INDEX = "index.json"

IndexAnswer = tuple[str, ...] | bytes | None
"""A file to serve (its parts), the bytes of a filtered unsigned index, or None (404: no signed form)."""


async def index_domain(state: ServerState, ctx: RequestContext, authorization: str | None) -> None:
    """Before quotas, for ``concelier.index`` on a host no domain claims: decide which domains the caller may
    read (kept in ``ctx.extra["readable"]`` for :func:`serve`), and when that is one domain — whose own signed
    index is then served — count the request against *that* domain's index budget, as
    ``/concelier/exports/mirror/<domain>/index.json`` is."""
    if not restricted(state, "concelier") or ctx.domain is None or ctx.domain.domain_id != WIDE_DOMAIN_ID:
        return
    allowed = await readable(state, "concelier", request_host(ctx), authorization)
    ctx.extra["readable"] = allowed
    if len(allowed) == 1:
        policy = state.site("concelier").domain(next(iter(allowed)))
        if policy is not None:
            ctx.domain = policy


async def serve(
    scope: Scope, send: Send, rt: Runtime, ctx: RequestContext, target: Target, authorization: str | None = None
) -> None:
    """Answer ``concelier.index`` and ``concelier.file`` targets."""
    state = rt.state()
    if target.handler == "concelier.index" and restricted(state, "concelier"):
        allowed = ctx.extra.get("readable")
        if allowed is None:
            allowed = await readable(state, "concelier", request_host(ctx), authorization)

        async def answer_index(export: ExportHandle) -> None:
            answer = index_answer(rt, export, allowed, target.parts[-1].removeprefix(INDEX))
            if answer is None:
                await not_found(send, "no signed index lists exactly the domains these credentials may read")
            elif isinstance(answer, tuple):
                await serve_file(scope, send, rt, ctx, export, answer)
            else:
                ctx.extra["exportId"] = export.export_id
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": filtered_headers(export.export_id, answer),
                    }
                )
                await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else answer})

        await answer_from_export(send, rt, "concelier", target.pin, answer_index)
        return

    async def answer(export: ExportHandle) -> None:
        await serve_file(scope, send, rt, ctx, export, target.parts)

    await answer_from_export(send, rt, "concelier", target.pin, answer)


def _memo_key(allowed: frozenset[str], suffix: str) -> tuple[str, frozenset[str], str]:
    return ("concelier-index", allowed, suffix)


def index_answer(rt: Runtime, export: ExportHandle, allowed: frozenset[str], suffix: str) -> IndexAnswer:
    """What a caller who may read the domains ``allowed`` gets for ``index.json`` + ``suffix`` ("", ".jws",
    ".sig") of ``export`` (see the module docstring); remembered for the export's TTL."""
    remembered = export.recall(_memo_key(allowed, suffix))
    if isinstance(remembered, tuple):  # wrapped, so a remembered 404 (None) is not a miss
        return remembered[0]  # type: ignore[no-any-return]
    doc, _ = read_json(export, ("mirror", INDEX), rt)
    entries: list[dict[str, Any]] = [d for d in doc.get("domains", []) if isinstance(d, dict)]
    shown = [d for d in entries if d.get("domainId") in allowed]
    answer: IndexAnswer
    if len(shown) == len(entries):
        answer = ("mirror", INDEX + suffix)
    elif len(shown) == 1 and export.lstat_regular(own := ("mirror", str(shown[0]["domainId"])), INDEX + suffix):
        answer = (*own, INDEX + suffix)
    elif suffix:
        answer = None
    else:
        answer = canonical.dumps({**doc, "domains": shown})
    export.remember(_memo_key(allowed, suffix), (answer,))
    return answer


def filtered_headers(export_id: str, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of a filtered unsigned index (the gateway adds caching, quota and ``Vary`` headers)."""
    return [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-mirror-export-id", export_id.encode()),
        (b"x-mirror-index", b"filtered-unsigned"),
    ]
