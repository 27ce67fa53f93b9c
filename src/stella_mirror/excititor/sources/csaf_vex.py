"""CSAF 2.0 (and 2.1) reader: ``product_status`` of every vulnerability becomes claims.

``csaf_vex`` documents are VEX by definition, but security advisories (``csaf_security_advisory``,
vendor-specific categories) carry the same ``product_status`` block, so every CSAF document is read;
one without ``product_status`` simply yields no claims.

Status mapping: ``known_affected``/``first_affected``/``last_affected`` → affected,
``known_not_affected`` → not_affected, ``fixed``/``first_fixed`` → fixed, ``under_investigation`` →
under_investigation (``recommended`` is advice, not a status, and is ignored).

Justification comes from ``flags[].label`` for the products the flag names (``product_ids`` and
``group_ids`` expanded through ``product_tree.product_groups``). CSAF 2.0 requires every
``known_not_affected`` product to have a flag *or* a ``threats[]`` entry of category ``impact``; the
impact statement therefore justifies the claim as well (``impactStatement``, and the ``detail``). Other
statuses take their detail from ``remediations[]`` (``category: details``).

Products come from the shared :mod:`stella_mirror.formats.csaf_product_tree` (branches, full product
names, relationships, 2.1 product paths and ``purls``). Key: the product's own purl, else its CPE; a
relationship product without identifiers takes its component's (``product_reference``) purl or CPE,
with the platform
(``relates_to_product_reference``) kept in ``context.platform``; a product with neither keeps its CSAF
product id qualified by the document: ``csaf:<tracking id>:<product_id>``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from stella_mirror.excititor.claims import (
    AFFECTED,
    FIXED,
    NOT_AFFECTED,
    UNDER_INVESTIGATION,
    Claim,
    looks_like_vulnerability_id,
    normalise_time,
)
from stella_mirror.excititor.sources.base import (
    ReadContext,
    ReadResult,
    expect_list,
    expect_object,
    expect_str,
    join_text,
    pointer,
)
from stella_mirror.formats.csaf_product_tree import ProductTree

FORMAT = "csaf"

STATUS_MAP: dict[str, str] = {
    "known_affected": AFFECTED,
    "first_affected": AFFECTED,
    "last_affected": AFFECTED,
    "known_not_affected": NOT_AFFECTED,
    "fixed": FIXED,
    "first_fixed": FIXED,
    "under_investigation": UNDER_INVESTIGATION,
}


def is_csaf(doc: Any) -> bool:
    """True when ``doc`` looks like a CSAF document (``document.csaf_version``)."""
    return isinstance(doc, dict) and isinstance(doc.get("document"), dict) and "csaf_version" in doc["document"]


def _qualified(tracking_id: str, pid: str) -> str:
    return f"csaf:{quote(tracking_id, safe='-._~:@')}:{quote(pid, safe='-._~:@/+')}"


def product_key(tree: ProductTree, tracking_id: str, pid: str) -> tuple[str, dict[str, Any] | None]:
    """The product key of a product id and the context worth keeping beside it."""
    prod = tree.get(pid)
    if prod.identified:
        return prod.purl or prod.cpe or "", None
    component = tree.identity(pid)
    if component is not prod and component.identified:
        context: dict[str, Any] = {"csafProductId": pid}
        if prod.platform:
            platform = tree.get(prod.platform)
            context["platform"] = (platform.purl or platform.cpe) if platform.identified else prod.platform
        return component.purl or component.cpe or "", context
    return _qualified(tracking_id, pid), None


class CsafVexReader:
    """The CSAF reader of Excititor (VEX documents and security advisories alike)."""

    format = FORMAT

    def detect(self, doc: Any) -> bool:
        """True for a CSAF document (``document.csaf_version``)."""
        return is_csaf(doc)

    def read(self, doc: Any, ctx: ReadContext) -> ReadResult[Claim]:
        """Turn one parsed CSAF document into claims."""
        return read(doc, ctx)


def read(doc: Any, ctx: ReadContext) -> ReadResult[Claim]:
    """Turn one parsed CSAF document into claims."""
    root = expect_object(ctx, doc, "", "a JSON object (a CSAF document)")
    document = expect_object(ctx, root.get("document"), "/document", "an object (this is not a CSAF document)")
    if "csaf_version" not in document:
        raise ctx.error("/document/csaf_version", "is required (this is not a CSAF document)")
    tracking = expect_object(ctx, document.get("tracking"), "/document/tracking")
    tracking_id = expect_str(ctx, tracking.get("id"), "/document/tracking/id", required=True)
    assert tracking_id is not None
    issued = normalise_time(tracking.get("current_release_date")) or normalise_time(
        tracking.get("initial_release_date")
    )
    tracking_id = tracking_id.strip()
    tree = ProductTree.load(ctx, root.get("product_tree"))
    result: ReadResult[Claim] = ReadResult(FORMAT)
    for i, raw in enumerate(expect_list(ctx, root.get("vulnerabilities"), "/vulnerabilities")):
        where = pointer("vulnerabilities", i)
        vuln = expect_object(ctx, raw, where)
        statuses = vuln.get("product_status")
        if statuses is None:
            continue
        statuses = expect_object(ctx, statuses, where + "/product_status")
        vid, aliases = _vulnerability_id(ctx, vuln, where, tracking_id, i)
        justification_of: dict[str, str] = {}
        for k, raw_flag in enumerate(expect_list(ctx, vuln.get("flags"), where + "/flags")):
            fw = f"{where}/flags/{k}"
            flag = expect_object(ctx, raw_flag, fw)
            label = expect_str(ctx, flag.get("label"), fw + "/label", required=True)
            assert label is not None
            for pid in tree.expand(flag, fw):
                justification_of.setdefault(pid, label)
        impact_of: dict[str, list[str]] = {}
        for k, raw_threat in enumerate(expect_list(ctx, vuln.get("threats"), where + "/threats")):
            tw = f"{where}/threats/{k}"
            threat = expect_object(ctx, raw_threat, tw)
            if threat.get("category") != "impact":
                continue
            details = expect_str(ctx, threat.get("details"), tw + "/details") or ""
            for pid in tree.expand(threat, tw):
                impact_of.setdefault(pid, []).append(details)
        remedy_of: dict[str, list[str]] = {}
        for k, raw_rem in enumerate(expect_list(ctx, vuln.get("remediations"), where + "/remediations")):
            rw = f"{where}/remediations/{k}"
            rem = expect_object(ctx, raw_rem, rw)
            details = expect_str(ctx, rem.get("details"), rw + "/details") or ""
            category = expect_str(ctx, rem.get("category"), rw + "/category") or "remediation"
            for pid in tree.expand(rem, rw):
                remedy_of.setdefault(pid, []).append(f"{category}: {details}" if details else category)
        seen: set[tuple[str, str]] = set()
        for csaf_status in sorted(statuses):
            status = STATUS_MAP.get(csaf_status)
            sw = f"{where}/product_status/{csaf_status}"
            pids = tree.ids(statuses[csaf_status], sw)
            if status is None:
                continue
            for pid in pids:
                key, context = product_key(tree, tracking_id, pid)
                if (key, status) in seen:  # e.g. the same product under both fixed and first_fixed
                    continue
                seen.add((key, status))
                impact = None
                if status == NOT_AFFECTED:
                    justification = justification_of.get(pid)
                    impact = detail = join_text(impact_of.get(pid, []))
                else:
                    justification = None
                    detail = join_text(remedy_of.get(pid, []))
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
                        context=context,
                        impact_statement=impact,
                    )
                )
    return result


def _vulnerability_id(
    ctx: ReadContext, vuln: dict[str, Any], where: str, tracking_id: str, index: int
) -> tuple[str, tuple[str, ...]]:
    """The CVE id, else the first vulnerability-like ``ids[].text``, else an id qualified by the document."""
    cve = expect_str(ctx, vuln.get("cve"), where + "/cve")
    others: list[str] = []
    for k, raw in enumerate(expect_list(ctx, vuln.get("ids"), where + "/ids")):
        entry = expect_object(ctx, raw, f"{where}/ids/{k}")
        text = expect_str(ctx, entry.get("text"), f"{where}/ids/{k}/text", required=True)
        assert text is not None
        if looks_like_vulnerability_id(text.strip()):
            others.append(text.strip())
    if cve and cve.strip():
        primary = cve.strip()
    elif others:
        primary = others[0]
    else:
        return f"csaf:{quote(tracking_id, safe='-._~:@')}:vulnerabilities/{index}", ()
    return primary, tuple(a for a in dict.fromkeys(others) if a != primary)
