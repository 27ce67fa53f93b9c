"""CSAF 2.0 (and 2.1) reader: ``product_status`` of every vulnerability becomes claims.

``csaf_vex`` documents are VEX by definition, but security advisories (``csaf_security_advisory``,
vendor-specific categories) carry the same ``product_status`` block, so every CSAF document is read;
one without ``product_status`` simply yields no claims.

Status mapping: ``known_affected``/``first_affected``/``last_affected`` → affected,
``known_not_affected`` → not_affected, ``fixed``/``first_fixed`` → fixed, ``under_investigation`` →
under_investigation (``recommended`` is advice, not a status, and is ignored).

Justification comes from ``flags[].label`` for the products the flag names (``product_ids`` and
``group_ids`` expanded through ``product_tree.product_groups``); detail from ``threats[]`` of category
``impact`` (not_affected) or ``remediations[]`` (other statuses).

Products: ``product_tree.branches`` (recursive), ``full_product_names``, ``relationships`` (2.0) and
``product_paths`` (2.1). Key: the product's own purl, else its CPE; a relationship product without
identifiers takes its component's (``product_reference``) purl or CPE, with the platform
(``relates_to_product_reference``) kept in ``context.platform``; a product with neither keeps its CSAF
product id qualified by the document: ``csaf:<tracking id>:<product_id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class _Product:
    purl: str | None = None
    cpe: str | None = None
    component: str | None = None
    platform: str | None = None


def _helper(ctx: ReadContext, prod: dict[str, Any], where: str) -> tuple[str | None, str | None]:
    helper = prod.get("product_identification_helper")
    if helper is None:
        return None, None
    helper = expect_object(ctx, helper, where + "/product_identification_helper")
    hwhere = where + "/product_identification_helper"
    purl = expect_str(ctx, helper.get("purl"), hwhere + "/purl")
    purls = expect_list(ctx, helper.get("purls"), hwhere + "/purls")  # CSAF 2.1
    if not purl and purls:
        purl = expect_str(ctx, purls[0], hwhere + "/purls/0", required=True)
    cpe = expect_str(ctx, helper.get("cpe"), hwhere + "/cpe")
    return (purl.strip() if purl else None), (cpe.strip() if cpe else None)


class _ProductTree:
    """Product ids of one document mapped to their identifiers, and product groups to product ids."""

    def __init__(self, ctx: ReadContext, tracking_id: str) -> None:
        self.ctx = ctx
        self.tracking_id = tracking_id
        self.products: dict[str, _Product] = {}
        self.groups: dict[str, list[str]] = {}

    def add_full_product(self, value: Any, where: str) -> str:
        prod = expect_object(self.ctx, value, where)
        pid = expect_str(self.ctx, prod.get("product_id"), where + "/product_id", required=True)
        assert pid is not None
        purl, cpe = _helper(self.ctx, prod, where)
        entry = self.products.setdefault(pid, _Product())
        entry.purl = entry.purl or purl
        entry.cpe = entry.cpe or cpe
        return pid

    def walk_branches(self, value: Any, where: str) -> None:
        # Iterative, so a deeply nested (or hostile) tree cannot exhaust the Python stack.
        stack: list[tuple[Any, str]] = [(value, where)]
        while stack:
            branches, bwhere = stack.pop()
            for i, raw in enumerate(expect_list(self.ctx, branches, bwhere)):
                w = f"{bwhere}/{i}"
                branch = expect_object(self.ctx, raw, w)
                if branch.get("product") is not None:
                    self.add_full_product(branch["product"], w + "/product")
                if branch.get("branches") is not None:
                    stack.append((branch["branches"], w + "/branches"))

    def load(self, tree: Any) -> None:
        if tree is None:
            return
        t = expect_object(self.ctx, tree, "/product_tree")
        self.walk_branches(t.get("branches"), "/product_tree/branches")
        for i, fpn in enumerate(expect_list(self.ctx, t.get("full_product_names"), "/product_tree/full_product_names")):
            self.add_full_product(fpn, f"/product_tree/full_product_names/{i}")
        for i, raw in enumerate(expect_list(self.ctx, t.get("relationships"), "/product_tree/relationships")):
            w = f"/product_tree/relationships/{i}"
            rel = expect_object(self.ctx, raw, w)
            pid = self.add_full_product(rel.get("full_product_name"), w + "/full_product_name")
            entry = self.products[pid]
            entry.component = expect_str(self.ctx, rel.get("product_reference"), w + "/product_reference")
            entry.platform = expect_str(
                self.ctx, rel.get("relates_to_product_reference"), w + "/relates_to_product_reference"
            )
        for i, raw in enumerate(expect_list(self.ctx, t.get("product_paths"), "/product_tree/product_paths")):
            w = f"/product_tree/product_paths/{i}"
            path = expect_object(self.ctx, raw, w)
            pid = self.add_full_product(path.get("full_product_name"), w + "/full_product_name")
            self.products[pid].component = expect_str(
                self.ctx, path.get("beginning_product_reference"), w + "/beginning_product_reference"
            )
        for i, raw in enumerate(expect_list(self.ctx, t.get("product_groups"), "/product_tree/product_groups")):
            w = f"/product_tree/product_groups/{i}"
            group = expect_object(self.ctx, raw, w)
            gid = expect_str(self.ctx, group.get("group_id"), w + "/group_id", required=True)
            assert gid is not None
            ids = expect_list(self.ctx, group.get("product_ids"), w + "/product_ids", required=True)
            self.groups[gid] = [self._id(x, f"{w}/product_ids/{k}") for k, x in enumerate(ids)]

    def _id(self, value: Any, where: str) -> str:
        text = expect_str(self.ctx, value, where, required=True)
        assert text is not None
        return text

    def ids(self, value: Any, where: str) -> list[str]:
        """A list of product ids (``product_ids``) checked for type."""
        return [self._id(x, f"{where}/{k}") for k, x in enumerate(expect_list(self.ctx, value, where))]

    def expand(self, holder: dict[str, Any], where: str) -> set[str]:
        """``product_ids`` plus the members of ``group_ids`` of a flag, threat or remediation."""
        out = set(self.ids(holder.get("product_ids"), where + "/product_ids"))
        for gid in self.ids(holder.get("group_ids"), where + "/group_ids"):
            out.update(self.groups.get(gid, ()))
        return out

    def qualified(self, pid: str) -> str:
        return f"csaf:{quote(self.tracking_id, safe='-._~:@')}:{quote(pid, safe='-._~:@/+')}"

    def key(self, pid: str) -> tuple[str, dict[str, Any] | None]:
        """The product key of a product id and the context worth keeping beside it."""
        prod = self.products.get(pid)
        if prod is None:
            return self.qualified(pid), None
        if prod.purl or prod.cpe:
            return prod.purl or prod.cpe or "", None
        component = self.products.get(prod.component) if prod.component else None
        if component is not None and (component.purl or component.cpe):
            context: dict[str, Any] = {"csafProductId": pid}
            if prod.platform:
                platform = self.products.get(prod.platform)
                context["platform"] = (
                    (platform.purl or platform.cpe) if platform and (platform.purl or platform.cpe) else prod.platform
                )
            return component.purl or component.cpe or "", context
        return self.qualified(pid), None


def read(doc: Any, ctx: ReadContext) -> ReadResult:
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
    tree = _ProductTree(ctx, tracking_id.strip())
    tree.load(root.get("product_tree"))
    result = ReadResult(FORMAT)
    for i, raw in enumerate(expect_list(ctx, root.get("vulnerabilities"), "/vulnerabilities")):
        where = pointer("vulnerabilities", i)
        vuln = expect_object(ctx, raw, where)
        statuses = vuln.get("product_status")
        if statuses is None:
            continue
        statuses = expect_object(ctx, statuses, where + "/product_status")
        vid, aliases = _vulnerability_id(ctx, vuln, where, tree.tracking_id, i)
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
                key, context = tree.key(pid)
                if (key, status) in seen:  # e.g. the same product under both fixed and first_fixed
                    continue
                seen.add((key, status))
                if status == NOT_AFFECTED:
                    justification = justification_of.get(pid)
                    detail = join_text(impact_of.get(pid, []))
                else:
                    justification = None
                    detail = join_text(remedy_of.get(pid, []))
                result.claims.append(
                    Claim(
                        vulnerability_id=vid,
                        product_key=key,
                        provider_id=ctx.provider_id,
                        status=status,
                        justification=justification,
                        detail=detail,
                        document_digest=ctx.digest,
                        issued_at=issued,
                        aliases=aliases,
                        document_path=ctx.path,
                        source_format=FORMAT,
                        context=context,
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
