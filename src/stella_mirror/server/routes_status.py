"""``GET /status`` (HTML, no JavaScript) and ``GET /status.json`` (B9): per domain the served export, its age,
sequence, expiresAt, sizes, signing key ids, the last sync and its lag, and request / 429 counts — only for
the domains the caller may read on this host (:mod:`stella_mirror.server.visibility`). The model is
:mod:`stella_mirror.ops.status`, the same one ``stella-mirror status`` prints. Never cached."""

from __future__ import annotations

import html

import orjson
from starlette.types import Scope, Send

from stella_mirror.ops.status import RootStatus, age_text, root_status
from stella_mirror.server.context import RequestContext
from stella_mirror.server.metrics import Metrics, request_counts
from stella_mirror.server.middleware.domain import request_host
from stella_mirror.server.routes_common import Runtime
from stella_mirror.server.visibility import readable
from stella_mirror.timeutil import utcnow

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}
th,td{border:1px solid #bbb;padding:.35em .7em;text-align:left}
th{background:#eee}
tr.stale td{background:#c62828;color:#fff}
.badge{font-weight:bold}
tr.fresh .badge{color:#1b5e20}
"""


async def statuses(rt: Runtime, ctx: RequestContext, authorization: str | None) -> list[RootStatus]:
    """What this caller may see: per served product, its root with the readable domains."""
    state = rt.state()
    now = utcnow()
    out = []
    for product, site in state.sites.items():
        if not site.served:
            continue
        visible = [p.domain_id for p in await readable(state, product, request_host(ctx), authorization)]
        if not visible:
            continue
        mirror = state.config.concelier.mirror if product == "concelier" else state.config.excititor.mirror
        out.append(root_status(product, site.root, now, mirror.active_export_id, visible))
    return out


def render_html(roots: list[RootStatus]) -> bytes:
    """The status page: one table per product, a stale domain's row marked STALE in red."""
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Mirror status</title>",
             f"<style>{_STYLE}</style></head><body><h1>Mirror status</h1>"]
    if not roots:
        parts.append("<p>No mirror domain is visible with these credentials on this host.</p>")
    for r in roots:
        if r.sync is None:
            sync = "never synced (filled by export on this host)"
        else:
            last = r.sync.last_success_at.isoformat() if r.sync.last_success_at else "never"
            sync = f"last successful sync {last}, lag {age_text(r.lag_seconds)}, last attempt: {r.sync.last_outcome}"
        parts.append(f"<h2>{e(r.product.title())}</h2><p>export <code>{e(r.export_id or '-')}</code>, "
                     f"sequence {r.sequence if r.sequence is not None else '-'}; {e(sync)}</p>")
        parts.extend(f"<p class='problem'>{e(p)}</p>" for p in r.problems)
        parts.append("<table><tr><th>state</th><th>domain</th><th>export</th><th>sequence</th><th>age</th>"
                     "<th>expires</th><th>size</th><th>items</th><th>signing keys</th><th>requests</th>"
                     "<th>429</th><th>problems</th></tr>")
        for d in r.domains:
            parts.append(
                f"<tr class='{'stale' if d.stale else 'fresh'}' id='{e(r.product)}-{e(d.domain_id)}'>"
                f"<td class='badge'>{'STALE' if d.stale else 'ok'}</td><td>{e(d.display_name or d.domain_id)}</td>"
                f"<td><code>{e(d.export_id or '-')}</code></td><td>{d.sequence if d.sequence is not None else '-'}"
                f"</td><td>{age_text(d.age_seconds)}</td><td>{e(str(d.expires_at or '-'))}</td>"
                f"<td>{d.size_bytes:,} B</td><td>{d.items}</td><td><code>{e(', '.join(d.key_ids) or '-')}</code></td>"
                f"<td>{d.requests if d.requests is not None else '-'}</td>"
                f"<td>{d.rejected if d.rejected is not None else '-'}</td><td>{e('; '.join(d.problems))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts).encode()


async def serve(
    scope: Scope,
    send: Send,
    rt: Runtime,
    ctx: RequestContext,
    handler: str,
    authorization: str | None,
    metrics: Metrics | None,
) -> None:
    """Answer ``ops.status`` (HTML) and ``ops.status.json``."""
    roots = await statuses(rt, ctx, authorization)
    if metrics is not None:
        counts = request_counts(metrics)
        for r in roots:
            for d in r.domains:
                d.requests, d.rejected = counts.get((d.product, d.domain_id), (0, 0))
    if handler == "ops.status.json":
        body, ctype = orjson.dumps({"roots": [r.as_dict() for r in roots]}), b"application/json"
    else:
        body, ctype = render_html(roots), b"text/html; charset=utf-8"
    headers = [
        (b"content-type", ctype),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        (b"vary", b"Authorization"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
