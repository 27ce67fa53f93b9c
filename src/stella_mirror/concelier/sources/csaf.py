"""CSAF 2.0 (and the compatible parts of 2.1) → one canonical source record per vulnerability.

Mapping choices (documented in docs/concelier.md):

- One record per ``vulnerabilities[]`` entry, keyed by its ``cve`` (else the first ``ids[].text``, else
  ``tracking.id`` — suffixed ``#<n>`` when the document has several vulnerabilities). The document's
  ``tracking.id`` is the provenance ``documentId``, never an alias: it would otherwise glue every CVE of
  a multi-vulnerability advisory into one merged advisory.
- ``title`` = vulnerability ``title``, else ``document.title``; ``summary`` = the first ``summary`` note
  (vulnerability first, then document); ``description`` = the first ``description`` note likewise.
- ``published`` = vulnerability ``release_date``, else ``tracking.initial_release_date``; ``modified`` =
  ``tracking.current_release_date`` (also the provenance ``recordedAt``).
- Products are resolved through ``product_tree``: branches (recursively, remembering the vendor,
  product name and version branches above each product), ``full_product_names`` and
  ``relationships`` (a relationship's product stands for its ``product_reference`` component unless it
  carries its own identification helper). A product with a purl becomes
  ``{ecosystem from the purl type, package, purl without version}``; one with a CPE becomes
  ``{ecosystem "CPE", package = the CPE up to the product part}``; any other becomes
  ``{ecosystem = vendor name, package = product name}``.
- ``known_affected``/``first_affected``/``last_affected`` products contribute their version to
  ``versions[]`` or their ``product_version_range`` (``vers:`` or ``<x``/``<=x``/``>=x``) to ``ranges[]``;
  ``fixed``/``first_fixed`` products contribute a range ``{fixed: version}``. ``known_not_affected`` and
  ``under_investigation`` are VEX statements (Excititor's job) and add nothing here.
- ``scores[].cvss_v3``/``cvss_v2`` (2.1: ``metrics[].content``) → ``cvss[]``; a missing v3 base score is
  computed from the vector. ``cwe.id`` → ``cwes``; references: ``self`` → ADVISORY, ``external`` → WEB,
  remediation URLs → FIX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from stella_mirror.concelier import cvss as cvsslib
from stella_mirror.concelier.model import (
    Advisory,
    Affected,
    Cvss,
    Doc,
    Interval,
    Range,
    Reference,
    interval_range,
    normalise_time,
    severity_from_cvss,
    severity_word,
    split_purl,
    unique,
)
from stella_mirror.concelier.sources.safeload import load_json

AFFECTED_STATUSES = ("known_affected", "first_affected", "last_affected")
FIXED_STATUSES = ("fixed", "first_fixed")
_MAX_RELATIONSHIP_HOPS = 8


def is_csaf(doc: Any) -> bool:
    """True for a parsed JSON object that is a CSAF document (has ``document.csaf_version``)."""
    return isinstance(doc, dict) and isinstance(doc.get("document"), dict) and "csaf_version" in doc["document"]


@dataclass
class Product:
    """What a product id resolves to."""

    name: str
    purl: str | None = None
    cpe: str | None = None
    vendor: str | None = None
    product_name: str | None = None
    version: str | None = None
    version_range: str | None = None


def _helper(d: Doc, product: dict[str, Any], ptr: str) -> tuple[str | None, str | None]:
    helper = d.opt_obj(product, "product_identification_helper", ptr)
    hptr = f"{ptr}/product_identification_helper"
    return d.opt_str(helper, "purl", hptr), d.opt_str(helper, "cpe", hptr)


def resolve_products(d: Doc, tree: dict[str, Any]) -> dict[str, Product]:
    """Map every product id in a ``product_tree`` to its identity."""
    products: dict[str, Product] = {}

    # Branches nest arbitrarily deep; walk them with an explicit stack, not recursion.
    stack: list[tuple[list[Any], str, dict[str, str]]] = [
        (d.opt_arr(tree, "branches", "/product_tree"), "/product_tree/branches", {})
    ]
    while stack:
        branches, ptr, context = stack.pop()
        for i, raw in enumerate(branches):
            bptr = f"{ptr}/{i}"
            branch = d.obj(raw, bptr)
            ctx = dict(context)
            category = d.opt_str(branch, "category", bptr) or ""
            name = d.opt_str(branch, "name", bptr) or ""
            ctx[category] = name
            if "product" in branch:
                prod = d.obj(branch["product"], f"{bptr}/product")
                pid = d.req_str(prod, "product_id", f"{bptr}/product")
                purl, cpe = _helper(d, prod, f"{bptr}/product")
                products[pid] = Product(
                    name=d.opt_str(prod, "name", f"{bptr}/product") or name,
                    purl=purl,
                    cpe=cpe,
                    vendor=ctx.get("vendor"),
                    product_name=ctx.get("product_name") or ctx.get("product_family"),
                    version=ctx.get("product_version"),
                    version_range=ctx.get("product_version_range"),
                )
            if "branches" in branch:
                stack.append((d.arr(branch["branches"], f"{bptr}/branches"), f"{bptr}/branches", ctx))

    for i, raw in enumerate(d.opt_arr(tree, "full_product_names", "/product_tree")):
        fptr = f"/product_tree/full_product_names/{i}"
        fpn = d.obj(raw, fptr)
        pid = d.req_str(fpn, "product_id", fptr)
        purl, cpe = _helper(d, fpn, fptr)
        products[pid] = Product(name=d.opt_str(fpn, "name", fptr) or pid, purl=purl, cpe=cpe)

    pending: list[tuple[str, str, Product | None]] = []
    for i, raw in enumerate(d.opt_arr(tree, "relationships", "/product_tree")):
        rptr = f"/product_tree/relationships/{i}"
        rel = d.obj(raw, rptr)
        fpn = d.opt_obj(rel, "full_product_name", rptr)
        pid = d.req_str(fpn, "product_id", f"{rptr}/full_product_name")
        ref = d.req_str(rel, "product_reference", rptr)
        purl, cpe = _helper(d, fpn, f"{rptr}/full_product_name")
        named = Product(name=d.opt_str(fpn, "name", f"{rptr}/full_product_name") or pid, purl=purl, cpe=cpe)
        pending.append((pid, ref, named if (purl or cpe) else None))
    # A relationship may refer to another relationship's product: resolve in a few rounds.
    for _ in range(_MAX_RELATIONSHIP_HOPS):
        left: list[tuple[str, str, Product | None]] = []
        for pid, ref, own in pending:
            if own is not None:
                products[pid] = own
            elif ref in products:
                products[pid] = products[ref]
            else:
                left.append((pid, ref, own))
        if not left or len(left) == len(pending):
            for pid, _ref, _own in left:
                products.setdefault(pid, Product(name=pid))
            break
        pending = left
    return products


def _cpe_package(cpe: str) -> tuple[str, str | None]:
    """``("cpe:2.3:a:vendor:product", version)`` from a CPE 2.2 URI or 2.3 formatted string."""
    if cpe.startswith("cpe:2.3:"):
        parts = cpe.split(":")
        base, version = ":".join(parts[:5]), (parts[5] if len(parts) > 5 else None)
    else:
        parts = cpe.split(":")
        base, version = ":".join(parts[:4]), (parts[4] if len(parts) > 4 else None)
    return base, (version if version not in (None, "", "*", "-") else None)


def parse_vers(text: str, rtype: str) -> tuple[list[Range], list[str]]:
    """Ranges and exact versions from ``vers:<scheme>/<c1>|<c2>`` or a bare ``<x``/``<=x``/``>=x``."""
    body = text.strip()
    if body.startswith("vers:"):
        body = body.split("/", 1)[1] if "/" in body else ""
    ranges: list[Range] = []
    versions: list[str] = []
    current: Interval | None = None
    for raw in body.split("|"):
        c = raw.strip()
        if not c:
            continue
        if c == "*":
            ranges.append(interval_range(rtype, {"introduced": None, "fixed": None, "lastAffected": None}))
            continue
        for op in (">=", "<=", "!=", ">", "<", "="):
            if c.startswith(op):
                value = c[len(op) :].strip()
                break
        else:
            op, value = "=", c
        if op in (">=", ">"):
            if current is not None:
                ranges.append(interval_range(rtype, current))
            current = {"introduced": value, "fixed": None, "lastAffected": None}
        elif op in ("<", "<="):
            iv = current or {"introduced": None, "fixed": None, "lastAffected": None}
            iv["fixed" if op == "<" else "lastAffected"] = value
            ranges.append(interval_range(rtype, iv))
            current = None
        elif op == "=":
            versions.append(value)
    if current is not None:
        ranges.append(interval_range(rtype, current))
    return ranges, versions


def _product_entry(prod: Product, pid: str, publisher: str) -> tuple[tuple[str, str, str | None], str | None, str]:
    """``((ecosystem, package, purl), version, range type)`` for a resolved product."""
    if prod.purl:
        parsed = split_purl(prod.purl)
        if parsed:
            eco, pkg, base, version = parsed
            return (eco, pkg, base), version or prod.version, "ECOSYSTEM"
    if prod.cpe:
        base, version = _cpe_package(prod.cpe)
        return ("CPE", base, None), version or prod.version, "VENDOR"
    package = prod.product_name or prod.name or pid
    return (prod.vendor or publisher, package, None), prod.version, "VENDOR"


def _affected(d: Doc, status: dict[str, Any], ptr: str, products: dict[str, Product], publisher: str) -> list[Affected]:
    entries: dict[tuple[str, str, str | None], Affected] = {}

    def entry(key: tuple[str, str, str | None]) -> Affected:
        if key not in entries:
            entries[key] = {"ecosystem": key[0], "package": key[1], "purl": key[2], "ranges": [], "versions": []}
        return entries[key]

    for group in (*AFFECTED_STATUSES, *FIXED_STATUSES):
        for k, raw_pid in enumerate(d.opt_arr(status, group, ptr)):
            pid = d.string(raw_pid, f"{ptr}/{group}/{k}")
            prod = products.get(pid) or Product(name=pid)
            key, version, rtype = _product_entry(prod, pid, publisher)
            aff = entry(key)
            if group in FIXED_STATUSES:
                if version:
                    fixed: Interval = {"introduced": None, "fixed": version, "lastAffected": None}
                    aff["ranges"].append(interval_range(rtype, fixed))
            elif prod.version_range:
                ranges, versions = parse_vers(prod.version_range, rtype)
                aff["ranges"].extend(ranges)
                aff["versions"].extend(versions)
            elif version:
                aff["versions"].append(version)
    out = []
    for aff in entries.values():
        uniq = {orjson.dumps(r, option=orjson.OPT_SORT_KEYS): r for r in aff["ranges"]}
        aff["ranges"] = [uniq[k] for k in sorted(uniq)]
        aff["versions"] = unique(aff["versions"])
        out.append(aff)
    return out


def _note(d: Doc, notes: list[Any], ptr: str, category: str) -> str | None:
    for i, raw in enumerate(notes):
        note = d.obj(raw, f"{ptr}/{i}")
        if note.get("category") == category:
            text = d.opt_str(note, "text", f"{ptr}/{i}")
            if text:
                return text
    return None


def _score(d: Doc, score: dict[str, Any], ptr: str) -> list[Cvss]:
    out: list[Cvss] = []
    for key in ("cvss_v3", "cvss_v4", "cvss_v2"):
        if key not in score:
            continue
        cptr = f"{ptr}/{key}"
        obj = d.obj(score[key], cptr)
        vector = d.req_str(obj, "vectorString", cptr).strip()
        given = obj.get("baseScore")
        if given is not None and (isinstance(given, bool) or not isinstance(given, int | float)):
            raise d.fail(f"{cptr}/baseScore", "expected a number")
        base: float | None = float(given) if given is not None else None
        if key == "cvss_v3":
            version = cvsslib.v3_version(vector)
            if version is None:
                raise d.fail(f"{cptr}/vectorString", f"not a CVSS v3 vector: {vector!r}")
            if base is None:
                try:
                    base = cvsslib.v3_base_score(vector)
                except cvsslib.CvssError as exc:
                    raise d.fail(f"{cptr}/vectorString", str(exc)) from None
        else:
            version = "4.0" if key == "cvss_v4" else "2.0"
        out.append({"version": version, "vector": vector, "baseScore": base})
    return out


def _references(d: Doc, refs: list[Any], ptr: str) -> list[Reference]:
    out: list[Reference] = []
    for i, raw in enumerate(refs):
        ref = d.obj(raw, f"{ptr}/{i}")
        url = d.req_str(ref, "url", f"{ptr}/{i}")
        out.append({"url": url, "type": "ADVISORY" if ref.get("category") == "self" else "WEB"})
    return out


def parse(path: str, data: bytes, source: str, digest: str) -> list[Advisory] | None:
    """Read one CSAF JSON file; None when it is JSON but not a CSAF document (a feed, metadata…)."""
    raw = load_json(path, data)
    if not is_csaf(raw):
        return None
    return to_records(Doc(path), raw, source, digest)


def to_records(d: Doc, raw: dict[str, Any], source: str, digest: str) -> list[Advisory]:
    """Map a parsed CSAF document onto canonical source records, one per vulnerability."""
    document = d.obj(raw["document"], "/document")
    d.string(document["csaf_version"], "/document/csaf_version")
    tracking = d.obj(document.get("tracking"), "/document/tracking")
    tracking_id = d.req_str(tracking, "id", "/document/tracking").strip()
    modified = normalise_time(
        d.req_str(tracking, "current_release_date", "/document/tracking"),
        d.path,
        "/document/tracking/current_release_date",
    )
    initial = normalise_time(
        d.req_str(tracking, "initial_release_date", "/document/tracking"),
        d.path,
        "/document/tracking/initial_release_date",
    )
    doc_title = d.opt_str(document, "title", "/document")
    publisher = d.opt_str(d.opt_obj(document, "publisher", "/document"), "name", "/document/publisher") or "CSAF"
    doc_notes = d.opt_arr(document, "notes", "/document")
    doc_refs = _references(d, d.opt_arr(document, "references", "/document"), "/document/references")
    products = resolve_products(d, d.opt_obj(raw, "product_tree", ""))
    vulns = d.opt_arr(raw, "vulnerabilities", "")

    records: list[Advisory] = []
    for i, raw_vuln in enumerate(vulns):
        vptr = f"/vulnerabilities/{i}"
        vuln = d.obj(raw_vuln, vptr)
        cve = d.opt_str(vuln, "cve", vptr)
        ids = []
        for k, raw_id in enumerate(d.opt_arr(vuln, "ids", vptr)):
            ids.append(d.req_str(d.obj(raw_id, f"{vptr}/ids/{k}"), "text", f"{vptr}/ids/{k}").strip())
        aliases = unique([a for a in [(cve or "").strip(), *ids] if a])
        key = aliases[0] if aliases else (tracking_id if len(vulns) == 1 else f"{tracking_id}#{i}")
        if not aliases:
            aliases = [key]
        notes = d.opt_arr(vuln, "notes", vptr)
        cvss: list[Cvss] = []
        for k, raw_score in enumerate(d.opt_arr(vuln, "scores", vptr)):
            cvss += _score(d, d.obj(raw_score, f"{vptr}/scores/{k}"), f"{vptr}/scores/{k}")
        for k, raw_metric in enumerate(d.opt_arr(vuln, "metrics", vptr)):  # CSAF 2.1
            metric = d.obj(raw_metric, f"{vptr}/metrics/{k}")
            cvss += _score(d, d.opt_obj(metric, "content", f"{vptr}/metrics/{k}"), f"{vptr}/metrics/{k}/content")
        cvss = list({(c["version"], c["vector"]): c for c in cvss}.values())
        cwes = []
        if vuln.get("cwe") is not None:
            cwe = d.opt_str(d.obj(vuln["cwe"], f"{vptr}/cwe"), "id", f"{vptr}/cwe")
            if cwe:
                cwes.append(cwe)
        refs = doc_refs + _references(d, d.opt_arr(vuln, "references", vptr), f"{vptr}/references")
        for k, raw_rem in enumerate(d.opt_arr(vuln, "remediations", vptr)):
            rem = d.obj(raw_rem, f"{vptr}/remediations/{k}")
            url = d.opt_str(rem, "url", f"{vptr}/remediations/{k}")
            if url:
                refs.append({"url": url, "type": "FIX" if rem.get("category") == "vendor_fix" else "WEB"})
        release = vuln.get("release_date")
        published = normalise_time(release, d.path, f"{vptr}/release_date") if release is not None else initial
        severity = None
        for k, threat in enumerate(d.opt_arr(vuln, "threats", vptr)):
            if (
                isinstance(threat, dict)
                and threat.get("category") == "impact"
                and isinstance(threat.get("details"), str)
            ):
                severity = severity_word(threat["details"]) or severity
            elif not isinstance(threat, dict):
                raise d.fail(f"{vptr}/threats/{k}", "expected an object")
        affected = _affected(d, d.opt_obj(vuln, "product_status", vptr), f"{vptr}/product_status", products, publisher)
        records.append(
            {
                "advisoryKey": key,
                "aliases": sorted(aliases),
                "title": d.opt_str(vuln, "title", vptr) or doc_title or None,
                "summary": _note(d, notes, f"{vptr}/notes", "summary")
                or _note(d, doc_notes, "/document/notes", "summary"),
                "description": _note(d, notes, f"{vptr}/notes", "description")
                or _note(d, doc_notes, "/document/notes", "description"),
                "published": published,
                "modified": modified,
                "withdrawn": None,
                "severity": severity or severity_from_cvss(cvss),
                "cvss": sorted(cvss, key=lambda c: (c["version"], c["vector"])),
                "cwes": sorted(set(cwes)),
                "references": sorted(
                    {(r["url"], r["type"]): r for r in refs}.values(), key=lambda r: (r["url"], r["type"])
                ),
                "affected": sorted(affected, key=lambda a: (a["ecosystem"], a["package"], a["purl"] or "")),
                "provenance": [{"source": source, "documentId": tracking_id, "digest": digest, "recordedAt": modified}],
            }
        )
    return records
