"""Operations routes: ``/healthz`` (alive), ``/readyz`` (able to serve), ``/metrics`` (Prometheus).

Readiness (S16) holds when every served product has an export root configured, it is readable, ``latest``
names an export, and the active index parses (Concelier ``mirror/index.json``; for Excititor each configured
domain's ``mirror/<domain>/index.json``). Otherwise ``503`` problem+json lists the reasons — with no export
root it says exactly ``Mirror export root is not configured`` — while ``/healthz`` stays ``200``.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from starlette.types import Scope, Send

from stella_mirror.server.exports import ExportHandle, ExportNotFound, RootUnavailable
from stella_mirror.server.metrics import FreshnessSource, Metrics, render
from stella_mirror.server.problems import send_problem, send_uncached
from stella_mirror.server.routes_common import Runtime, read_json
from stella_mirror.server.state import NOT_CONFIGURED, WIDE_DOMAIN_ID, ServerState

_HEALTHY = orjson.dumps({"status": "ok"})


def _index_parts(product: str, domain: str) -> tuple[str, ...]:
    return ("mirror", "index.json") if product == "concelier" else ("mirror", domain, "index.json")


def readiness(state: ServerState, rt: Runtime) -> list[str]:
    """Reasons the server cannot serve (empty when ready)."""
    reasons: list[str] = []
    for site in state.sites.values():
        if not site.served:
            continue
        if site.resolver is None:
            reasons.append(f"{site.product}: {NOT_CONFIGURED}")
            continue
        try:
            export = site.resolver.resolve()
        except (RootUnavailable, ExportNotFound) as exc:
            reasons.append(f"{site.product}: {exc}")
            continue
        doms = [WIDE_DOMAIN_ID] if site.product == "concelier" else list(site.domains)
        for dom in doms:
            try:
                doc, _ = read_json(export, _index_parts(site.product, dom), rt)
            except ExportNotFound:
                reasons.append(
                    f"{site.product}: export {export.export_id} has no index"
                    + ("" if dom == WIDE_DOMAIN_ID else f" for domain {dom}")
                )
                continue
            except ValueError:
                reasons.append(f"{site.product}: the index of export {export.export_id} is not valid JSON")
                continue
            if not isinstance(doc, dict) or "exportId" not in doc:
                reasons.append(f"{site.product}: the index of export {export.export_id} is not an index")
    return reasons


class ActiveIndexes(FreshnessSource):
    """Freshness of the active exports, read at scrape time (parsed indexes are cached by file version)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def indexes(self) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        state = self.rt.state()
        for site in state.sites.values():
            if not site.served or site.resolver is None:
                continue
            try:
                export = site.resolver.resolve()
                if site.product == "concelier":
                    docs = [
                        (name, self._doc(export, ("mirror", "index.json")))
                        for name in (list(site.domains) or [WIDE_DOMAIN_ID])
                    ]
                else:
                    docs = [(name, self._doc(export, ("mirror", name, "index.json"))) for name in site.domains]
            except RootUnavailable:
                docs = [(name, None) for name in list(site.domains) or [WIDE_DOMAIN_ID]]
            for name, doc in docs:
                yield site.product, name, doc

    def roots(self) -> Iterator[tuple[str, Path | None]]:
        for site in self.rt.state().sites.values():
            if site.served:
                yield site.product, site.root

    def certificates(self) -> Iterator[tuple[str, Path]]:
        config = self.rt.state().config
        if config.mirror.tls.cert_file is not None:
            yield "_default", config.mirror.tls.cert_file
        for mirror in (config.concelier.mirror, config.excititor.mirror):
            for dom in mirror.domains:
                if dom.tls.cert_file is not None:
                    yield dom.id, dom.tls.cert_file

    def _doc(self, export: ExportHandle, parts: tuple[str, ...]) -> dict[str, Any] | None:
        try:
            doc, _ = read_json(export, parts, self.rt)
        except (ExportNotFound, ValueError):
            return None
        return doc if isinstance(doc, dict) else None


async def healthz(send: Send) -> None:
    await send_uncached(send, 200, b"application/json", _HEALTHY)


async def readyz(send: Send, rt: Runtime) -> None:
    reasons = readiness(rt.state(), rt)
    if reasons:
        await send_problem(send, 503, "not-ready", "Not ready", "; ".join(reasons), {"Retry-After": "10"})
        return
    await send_uncached(send, 200, b"application/json", orjson.dumps({"status": "ready"}))


async def metrics(send: Send, rt: Runtime, registry: Metrics) -> None:
    body = render(registry, ActiveIndexes(rt))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def landing_page(state: ServerState) -> bytes:
    """``/``: what this server is and where to go — the status page, each served product's index, the docs."""
    links = [("/status", "Mirror status"), ("/status.json", "Mirror status (JSON)")]
    if state.site("concelier").served:
        links.append(("/concelier/exports/index.json", "Concelier mirror index"))
    if state.site("excititor").served:
        links.append(("/excititor/mirror/domains", "Excititor mirror domains"))
    docs = state.config.mirror.docs_url
    if docs:
        links.append((docs, "Documentation"))
    items = "".join(f"<li><a href='{html.escape(href)}'>{html.escape(text)}</a></li>" for href, text in links)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>StellaOps mirror</title></head>"
        "<body style='font-family:system-ui,sans-serif;margin:2em'><h1>StellaOps mirror</h1>"
        "<p>Signed Concelier advisory and Excititor VEX exports. Some domains need credentials (Basic or an "
        "Authority token); verify what you download with the mirror's public key (<code>stella-mirror verify"
        "</code>).</p>"
        f"<ul>{items}</ul></body></html>\n"
    ).encode()


async def serve(scope: Scope, send: Send, rt: Runtime, handler: str, registry: Metrics | None) -> None:
    """Answer ``ops.*`` targets."""
    if handler == "ops.home":
        body = landing_page(rt.state())
        await send_uncached(send, 200, b"text/html; charset=utf-8", body)
    elif handler == "ops.healthz":
        await healthz(send)
    elif handler == "ops.readyz":
        await readyz(send, rt)
    elif registry is not None:
        await metrics(send, rt, registry)
    else:
        await send_problem(send, 404, "not-found", "Not found", "metrics are disabled")
