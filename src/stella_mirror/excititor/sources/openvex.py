"""OpenVEX reader: v0.2.0 (``https://openvex.dev/ns/v0.2.0``) and the older ``https://openvex.dev/ns`` (v0.0.x).

Differences handled:

* ``vulnerability`` is an object (``name``/``@id``, ``aliases``) in v0.2.0 and a plain string in v0.0.1;
* ``products`` are objects (``@id``, ``identifiers.purl``/``cpe23``/``cpe22``, ``subcomponents``) in
  v0.2.0 and plain strings (with statement-level ``subcomponents`` strings) in v0.0.1;
* times: a statement's ``last_updated``/``timestamp`` overrides the document's.

Subcomponents: per the OpenVEX specification a statement is about its *product*; ``subcomponents``
name the components of that product where the vulnerability originates, so that scanners can match
their findings. A statement about product P with subcomponents S1, S2 therefore yields exactly one claim
per product: ``productKey`` = P, with ``context.subcomponents`` = [S1, S2] (keys as for products,
deduplicated, in document order) — "not affected *within P*". There is never a claim whose product is a
subcomponent: "S is not affected inside P" says nothing about S elsewhere.

Justification: ``not_affected`` needs a ``justification`` or an ``impact_statement`` (OpenVEX spec);
either one makes the claim count. The impact statement is kept in ``impactStatement`` as well as in the
joined ``detail``.

A statement without products (allowed by v0.0.1 examples) carries no claim: it is skipped with a
warning rather than rejecting the document.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from stella_mirror.excititor.claims import JUSTIFICATIONS, STATUSES, Claim, normalise_time
from stella_mirror.excititor.sources.base import (
    ReadContext,
    ReadResult,
    expect_list,
    expect_object,
    expect_str,
    join_text,
    pointer,
)

FORMAT = "openvex"
CONTEXT_PREFIX = "https://openvex.dev/ns"


def is_openvex(doc: Any) -> bool:
    """True when ``doc`` declares an OpenVEX ``@context``."""
    return isinstance(doc, dict) and isinstance(doc.get("@context"), str) and doc["@context"].startswith(CONTEXT_PREFIX)


def _vulnerability(ctx: ReadContext, value: Any, where: str) -> tuple[str, tuple[str, ...]]:
    if isinstance(value, str):  # v0.0.1
        if not value.strip():
            raise ctx.error(where, "must be a non-empty vulnerability id")
        return value.strip(), ()
    vuln = expect_object(ctx, value, where, "a vulnerability object or id string")
    name = expect_str(ctx, vuln.get("name"), where + "/name")
    iri = expect_str(ctx, vuln.get("@id"), where + "/@id")
    vid = (name or iri or "").strip()
    if not vid:
        raise ctx.error(where + "/name", "is required (the vulnerability's name)")
    aliases: list[str] = []
    for k, alias in enumerate(expect_list(ctx, vuln.get("aliases"), where + "/aliases")):
        text = expect_str(ctx, alias, f"{where}/aliases/{k}", required=True)
        assert text is not None
        if text.strip() != vid:
            aliases.append(text.strip())
    return vid, tuple(aliases)


PRODUCT_URN = "urn:stella-mirror:product:"


def _product_key(ctx: ReadContext, value: Any, where: str) -> str:
    """A product's key: a purl ``@id``, else ``identifiers.purl``, else ``@id``, else a CPE."""
    if isinstance(value, str):  # v0.0.1
        if not value.strip():
            raise ctx.error(where, "must be a non-empty product id")
        return value.strip()
    prod = expect_object(ctx, value, where, "a product object or id string")
    iri = expect_str(ctx, prod.get("@id"), where + "/@id")
    ids = prod.get("identifiers")
    idents = expect_object(ctx, ids, where + "/identifiers") if ids is not None else {}
    purl = expect_str(ctx, idents.get("purl"), where + "/identifiers/purl")
    cpe = None
    for name in ("cpe23", "cpe22", "@cpe23", "@cpe22"):
        cpe = cpe or expect_str(ctx, idents.get(name), f"{where}/identifiers/{name}")
    if iri and iri.startswith(PRODUCT_URN):  # written by our own openvex export for scheme-less keys
        iri = urllib.parse.unquote(iri[len(PRODUCT_URN) :])
    for candidate in (iri if iri and iri.startswith("pkg:") else None, purl, iri, cpe):
        if candidate and candidate.strip():
            return candidate.strip()
    raise ctx.error(where, "product has no @id and no identifiers (purl, cpe23, cpe22)")


class OpenVexReader:
    """The OpenVEX reader (v0.2.0 and v0.0.x)."""

    format = FORMAT

    def detect(self, doc: Any) -> bool:
        """True when ``doc`` declares an OpenVEX ``@context``."""
        return is_openvex(doc)

    def read(self, doc: Any, ctx: ReadContext) -> ReadResult[Claim]:
        """Turn one parsed OpenVEX document into claims."""
        return read(doc, ctx)


def read(doc: Any, ctx: ReadContext) -> ReadResult[Claim]:
    """Turn one parsed OpenVEX document into claims."""
    root = expect_object(ctx, doc, "", "a JSON object (an OpenVEX document)")
    if not is_openvex(root):
        raise ctx.error("/@context", f"must be an OpenVEX context ({CONTEXT_PREFIX}…)")
    result: ReadResult[Claim] = ReadResult(FORMAT)
    doc_time = normalise_time(root.get("last_updated")) or normalise_time(root.get("timestamp"))
    statements = expect_list(ctx, root.get("statements"), "/statements", required=True)
    for i, raw in enumerate(statements):
        where = pointer("statements", i)
        st = expect_object(ctx, raw, where)
        vid, aliases = _vulnerability(ctx, st.get("vulnerability"), where + "/vulnerability")
        status = st.get("status")
        if status not in STATUSES:
            raise ctx.error(where + "/status", f"must be one of {', '.join(STATUSES)} (got {status!r})")
        justification = expect_str(ctx, st.get("justification"), where + "/justification") or None
        if justification is not None and justification not in JUSTIFICATIONS:
            raise ctx.error(where + "/justification", f"{justification!r} is not an OpenVEX justification")
        impact = (expect_str(ctx, st.get("impact_statement"), where + "/impact_statement") or "").strip() or None
        detail = join_text(
            [
                expect_str(ctx, st.get(name), f"{where}/{name}") or ""
                for name in ("impact_statement", "action_statement", "status_notes", "statement")
            ]
        )
        issued = normalise_time(st.get("last_updated")) or normalise_time(st.get("timestamp")) or doc_time
        products = expect_list(ctx, st.get("products"), where + "/products")
        shared_subs = expect_list(ctx, st.get("subcomponents"), where + "/subcomponents")  # v0.0.1
        if not products:
            result.warnings.append(f"{ctx.path}#{where}: statement names no products; no claim")
            continue
        shared_keys = [_product_key(ctx, s, f"{where}/subcomponents/{k}") for k, s in enumerate(shared_subs)]
        for j, prod in enumerate(products):
            pwhere = f"{where}/products/{j}"
            key = _product_key(ctx, prod, pwhere)
            own_subs = prod.get("subcomponents") if isinstance(prod, dict) else None
            subs = [
                _product_key(ctx, s, f"{pwhere}/subcomponents/{k}")
                for k, s in enumerate(expect_list(ctx, own_subs, pwhere + "/subcomponents"))
            ]
            subs = list(dict.fromkeys([*subs, *shared_keys]))
            result.items.append(
                Claim(
                    vulnerability_id=vid,
                    product_key=key,
                    provider_id=ctx.source,
                    status=status,
                    justification=justification,
                    detail=detail,
                    document_digest=ctx.digest,
                    issued_at=issued,
                    aliases=aliases,
                    document_path=ctx.path,
                    source_format=FORMAT,
                    context={"subcomponents": subs} if subs else None,
                    impact_statement=impact if status == "not_affected" else None,
                )
            )
    return result
