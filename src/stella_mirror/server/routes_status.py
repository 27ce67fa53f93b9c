"""``GET /status`` (HTML, no JavaScript) and ``GET /status.json`` (B9): per domain the served export, its age,
sequence, expiresAt, sizes, signing key ids, the last sync and its lag, and request / 429 counts — only for
the domains the caller may read on this host (:mod:`stella_mirror.server.visibility`). Where the exports live
on disk (``root``, and paths in problem texts) only for a caller who may read every domain. The model is
:mod:`stella_mirror.ops.status`, the same one ``stella-mirror status`` prints. Never cached; the gateway limits
how often one client may ask (``mirror.limits.statusRequestsPerMinute``).

Both product lines, wherever an operator reaches the page: a server running one product (the compose and Helm
profiles run one per product, and the gateway sends ``/status`` to the Concelier one) adds the other product's
roots as its server reports them for the same caller (:func:`peer_roots`)."""

from __future__ import annotations

import html
from typing import Any

import httpx
import orjson
from starlette.types import Scope, Send

from stella_mirror.ops.status import RootStatus, age_text, root_status
from stella_mirror.server.authn.authenticator import CheckBudget
from stella_mirror.server.context import RequestContext
from stella_mirror.server.metrics import Metrics, request_counts
from stella_mirror.server.middleware.domain import request_host
from stella_mirror.server.problems import send_problem
from stella_mirror.server.routes_common import Runtime
from stella_mirror.server.visibility import readable, served_on
from stella_mirror.timeutil import utcnow

PEER_TIMEOUT = 3.0

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em;max-width:100%}
th,td{border:1px solid #bbb;padding:.35em .7em;text-align:left;overflow-wrap:anywhere}
th{background:#eee}
td.problems{max-width:22em;overflow-wrap:anywhere}
td.num{text-align:right;white-space:nowrap}
tr.stale td{background:#c62828;color:#fff}
.badge{font-weight:bold}
tr.fresh .badge{color:#1b5e20}
"""


async def statuses(rt: Runtime, ctx: RequestContext, authorization: str | None) -> tuple[list[RootStatus], bool]:
    """What this caller may see: per served product, its root with the readable domains; and whether that is
    every domain (then the roots' paths may be shown)."""
    state = rt.state()
    now = utcnow()
    out = []
    everything = True
    budget = CheckBudget(1)  # one bcrypt check for the whole page, both products
    for product, site in state.sites.items():
        if not site.served:
            continue
        allowed = await readable(state, product, request_host(ctx), authorization, budget)
        visible = [d for d in site.domains if d in allowed]
        everything = everything and len(visible) == len(site.domains)
        if not visible:
            continue
        mirror = state.config.concelier.mirror if product == "concelier" else state.config.excititor.mirror
        out.append(root_status(product, site.root, now, mirror.active_export_id, visible))
    return out, everything


def without_paths(root: dict[str, Any]) -> dict[str, Any]:
    """A root's status without where it lives on disk (for callers who may not read every domain)."""
    path = root.get("root")

    def scrub(texts: Any) -> Any:
        if not path or not isinstance(texts, list):
            return texts
        return [str(t).replace(path, "<export root>") for t in texts]

    domains = [{**d, "problems": scrub(d.get("problems"))} for d in root.get("domains") or []]
    return {**root, "root": None, "problems": scrub(root.get("problems")), "domains": domains}


def human_size(size: int) -> str:
    """A byte count in binary units, e.g. ``20.0 MiB`` (the exact figure is in ``/status.json``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render_html(roots: list[dict[str, Any]], generated_at: str = "") -> bytes:
    """The status page from the ``/status.json`` model: one table per product, a stale domain's row marked STALE
    in red."""
    e = html.escape

    def dash(value: Any) -> str:
        return "-" if value is None else e(str(value))

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Mirror status</title>",
        f"<style>{_STYLE}</style></head><body><h1>Mirror status</h1>",
        f"<p class='generated'>Generated at <time>{e(generated_at)}</time></p>" if generated_at else "",
    ]
    if not roots:
        parts.append("<p>No mirror domain is visible with these credentials on this host.</p>")
    for r in roots:
        sync = r.get("lastSync")
        if sync is None:
            sync_text = "never synced (filled by export on this host)"
        else:
            last = sync.get("lastSuccessAt") or "never"
            sync_text = (
                f"last successful sync {last}, lag {age_text(r.get('lagSeconds'))}, "
                f"last attempt: {sync.get('lastOutcome')}"
            )
        product = str(r.get("product", ""))
        parts.append(
            f"<h2>{e(product.title())}</h2><p>export <code>{dash(r.get('exportId'))}</code>, "
            f"sequence {dash(r.get('sequence'))}; {e(sync_text)}</p>"
        )
        parts.extend(f"<p class='problem'>{e(str(p))}</p>" for p in r.get("problems") or [])
        parts.append(
            "<table><tr><th>state</th><th>domain</th><th>export</th><th>sequence</th><th>age</th>"
            "<th>expires</th><th>size</th><th>items</th><th>signing keys</th><th>requests</th>"
            "<th>429</th><th>problems</th></tr>"
        )
        for d in r.get("domains") or []:
            stale = bool(d.get("stale"))
            parts.append(
                f"<tr class='{'stale' if stale else 'fresh'}' id='{e(product)}-{e(str(d.get('domainId')))}'>"
                f"<td class='badge'>{'STALE' if stale else 'ok'}</td>"
                f"<td>{e(str(d.get('displayName') or d.get('domainId')))}</td>"
                f"<td><code>{dash(d.get('exportId'))}</code></td><td>{dash(d.get('sequence'))}</td>"
                f"<td>{age_text(d.get('ageSeconds'))}</td><td>{dash(d.get('expiresAt'))}</td>"
                f"<td class='num' title='{int(d.get('sizeBytes') or 0)} bytes'>"
                f"{human_size(int(d.get('sizeBytes') or 0))}</td><td>{dash(d.get('items'))}</td>"
                f"<td><code>{e(', '.join(d.get('keyIds') or [])) or '-'}</code></td>"
                f"<td>{dash(d.get('requests'))}</td><td>{dash(d.get('quotaRejections'))}</td>"
                f"<td class='problems'>{e('; '.join(d.get('problems') or []))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts).encode()


def _challenge(rt: Runtime, ctx: RequestContext) -> str | None:
    """The ``WWW-Authenticate`` of the first domain served on this host that requires authentication, if any."""
    state = rt.state()
    auth = state.authenticator
    if auth is None:
        return None
    host = request_host(ctx)
    for product, site in state.sites.items():
        if site.served:
            for policy in served_on(state, product, host):
                if auth.required(policy):
                    return auth.challenge(policy)
    return None


PEER_HEADER = b"x-mirror-status-peer"
"""Marks a status request from the other product's server: answered with this server's products only."""


async def peer_roots(rt: Runtime, scope: Scope, authorization: str | None) -> list[dict[str, Any]]:
    """The other product line's roots when this server serves one product (``--service``, as the compose and Helm
    profiles run them) and the other is configured: asked from its server (``mirror.gateway.upstreams.<product>``,
    where the gateway reaches it) with the caller's Host and Authorization, so it shows what this caller may see
    there. An unreachable peer is shown as a stale root saying so."""
    headers = dict(scope["headers"])
    if PEER_HEADER in headers:
        return []
    config = rt.state().config
    out = []
    for product, site in rt.state().sites.items():
        root = config.concelier.mirror.export_root if product == "concelier" else config.excititor.export_root
        enabled = (config.concelier.mirror if product == "concelier" else config.excititor.mirror).enabled
        if site.served or not enabled or root is None:
            continue
        address = getattr(config.mirror.gateway.upstreams, product)
        ask = {"host": headers.get(b"host", b"").decode("latin-1"), PEER_HEADER.decode(): "1"}
        if authorization:
            ask["authorization"] = authorization
        try:
            async with httpx.AsyncClient(timeout=PEER_TIMEOUT) as client:
                r = await client.get(f"http://{address}/status.json", headers=ask)
            r.raise_for_status()
            out += [root for root in r.json()["roots"] if root.get("product") == product]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
            reason = f"HTTP {status}" if status else type(exc).__name__
            out.append(
                {
                    "product": product,
                    "stale": True,
                    "domains": [],
                    "problems": [f"{product} status unavailable from its server at {address}: {reason}"],
                }
            )
    return out


async def serve(
    scope: Scope,
    send: Send,
    rt: Runtime,
    ctx: RequestContext,
    handler: str,
    authorization: str | None,
    metrics: Metrics | None,
) -> None:
    """Answer ``ops.status`` (HTML) and ``ops.status.json``: 401 with a challenge when the caller sees no domain
    and some domain served on this host requires authentication (so a browser asks for credentials)."""
    roots, everything = await statuses(rt, ctx, authorization)
    if metrics is not None:
        counts = request_counts(metrics)
        for r in roots:
            for d in r.domains:
                d.requests, d.rejected = counts.get((d.product, d.domain_id), (0, 0))
    model = [r.as_dict() for r in roots] + await peer_roots(rt, scope, authorization)
    if not any(r.get("domains") for r in model):
        challenge = _challenge(rt, ctx)
        if challenge is not None:
            await send_problem(
                send,
                401,
                "unauthorized",
                "Authentication required",
                "no mirror domain on this host is visible without credentials",
                {"WWW-Authenticate": challenge, "Vary": "Authorization"},
            )
            return
    if not everything:
        model = [without_paths(r) for r in model]
    model.sort(key=lambda r: r["product"] != "concelier")
    if handler == "ops.status.json":
        body, ctype = orjson.dumps({"roots": model}), b"application/json"
    else:
        generated = utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")
        body, ctype = render_html(model, generated), b"text/html; charset=utf-8"
    headers = [
        (b"content-type", ctype),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        (b"vary", b"Authorization"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
