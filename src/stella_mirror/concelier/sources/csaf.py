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
- Products are resolved through the shared :mod:`stella_mirror.formats.csaf_product_tree` (branches with
  the vendor, product name and version branches above each product, ``full_product_names``,
  relationships and 2.1 product paths — a product without purl/CPE stands for the component it names —
  and 2.1 ``purls``). A product with a purl becomes ``{ecosystem from the purl type, package, purl
  without version}``; one with a CPE becomes ``{ecosystem "CPE", package = the CPE up to the product
  part}``; any other becomes ``{ecosystem = vendor name, package = product name}``.
- ``known_affected``/``first_affected``/``last_affected`` products contribute their version to
  ``versions[]``, or their version range to ``ranges[]`` (:mod:`.csaf_ranges`): a ``VERS`` range
  (``vers``, derived ``intervals``, exact ``=`` versions also in ``versions[]``) when the
  ``product_version_range`` — or a ``product_version`` name that is really a range expression, such as
  ``All versions < V4.33`` — reads unambiguously, else a ``TEXT`` range. Both keep the source's words
  verbatim in ``text``; nothing is guessed. ``fixed``/``first_fixed`` products contribute a ``FIXED``
  range: the version the document names as fixed (interval ``{fixed: version}``).
  ``known_not_affected`` and ``under_investigation`` are VEX statements (Excititor's job) and add
  nothing to ``affected``.
- ``remediations[]``, ``flags[]`` and ``threats[]`` are kept in the record verbatim (source key names),
  each with ``documentId`` (the tracking id) and ``products`` (the package identities its product and
  group ids resolve to).
- ``scores[].cvss_v3``/``cvss_v2`` (2.1: ``metrics[].content``) → ``cvss[]``; a missing v3 base score is
  computed from the vector. ``cwe.id`` → ``cwes``; references: ``self`` → ADVISORY, ``external`` → WEB,
  remediation URLs → FIX.
"""

from __future__ import annotations

from typing import Any

import orjson

from stella_mirror.concelier import cvss as cvsslib
from stella_mirror.concelier.model import (
    Advisory,
    Affected,
    Cvss,
    Doc,
    Range,
    Reference,
    interval_range,
    normalise_time,
    severity_from_cvss,
    severity_word,
    split_purl,
    unique,
)
from stella_mirror.concelier.sources import csaf_ranges
from stella_mirror.concelier.sources.safeload import load_json
from stella_mirror.formats.csaf_product_tree import Product, ProductTree
from stella_mirror.formats.reader import ReadContext, ReadResult, expect_list, expect_object

FORMAT = "csaf"
AFFECTED_STATUSES = ("known_affected", "first_affected", "last_affected")
FIXED_STATUSES = ("fixed", "first_fixed")
PackageKey = tuple[str, str, str | None]


def is_csaf(doc: Any) -> bool:
    """True for a parsed JSON object that is a CSAF document (has ``document.csaf_version``)."""
    return isinstance(doc, dict) and isinstance(doc.get("document"), dict) and "csaf_version" in doc["document"]


def _cpe_package(cpe: str) -> tuple[str, str | None]:
    """``("cpe:2.3:a:vendor:product", version)`` from a CPE 2.2 URI or 2.3 formatted string."""
    if cpe.startswith("cpe:2.3:"):
        parts = cpe.split(":")
        base, version = ":".join(parts[:5]), (parts[5] if len(parts) > 5 else None)
    else:
        parts = cpe.split(":")
        base, version = ":".join(parts[:4]), (parts[4] if len(parts) > 4 else None)
    return base, (version if version not in (None, "", "*", "-") else None)


def _range(rtype: str, text: str | None, vers: str | None, intervals: list[Any] | None) -> Range:
    return {
        "type": rtype,
        "repo": None,
        "events": None,
        "vers": vers,
        "text": text,
        "intervals": intervals,
        "databaseSpecific": None,
    }


def version_range(text: str, purl_type: str | None) -> tuple[Range, list[str]]:
    """A CSAF version range as a canonical range (``VERS`` when it reads unambiguously, else ``TEXT``)
    and the exact versions it names."""
    parsed = csaf_ranges.parse(text, purl_type)
    if parsed is None:
        return _range("TEXT", text, None, None), []
    return _range("VERS", text, parsed.vers, parsed.intervals), parsed.versions


def fixed_range(version: str) -> Range:
    """The range of a product version a document lists as ``fixed``."""
    return interval_range("FIXED", {"introduced": None, "fixed": version, "lastAffected": None})


def _product_entry(prod: Product, publisher: str) -> tuple[PackageKey, str | None, str | None]:
    """``((ecosystem, package, purl), version, purl type)`` for a resolved product."""
    if prod.purl:
        parsed = split_purl(prod.purl)
        if parsed:
            eco, pkg, base, version = parsed
            return (eco, pkg, base), version or prod.version, base[4:].split("/", 1)[0]
    if prod.cpe:
        base, version = _cpe_package(prod.cpe)
        return ("CPE", base, None), version or prod.version, None
    package = prod.product_name or prod.name or prod.product_id
    return (prod.vendor or publisher, package, None), prod.version, None


def _affected(d: Doc, status: dict[str, Any], ptr: str, tree: ProductTree, publisher: str) -> list[Affected]:
    entries: dict[PackageKey, Affected] = {}
    for group in (*AFFECTED_STATUSES, *FIXED_STATUSES):
        for pid in tree.ids(status.get(group), f"{ptr}/{group}"):
            prod = tree.identity(pid)
            key, version, purl_type = _product_entry(prod, publisher)
            aff = entries.get(key)
            if aff is None:
                aff = entries[key] = {
                    "ecosystem": key[0],
                    "package": key[1],
                    "purl": key[2],
                    "ranges": [],
                    "versions": [],
                }
            if group in FIXED_STATUSES:
                if version:
                    aff["ranges"].append(fixed_range(version))
                continue
            text = prod.version_range or (version if version and csaf_ranges.looks_like_range(version) else None)
            if text is not None:
                rng, exact = version_range(text, purl_type)
                aff["ranges"].append(rng)
                aff["versions"].extend(exact)
            elif version:
                aff["versions"].append(version)
    out = []
    for aff in entries.values():
        uniq = {orjson.dumps(r, option=orjson.OPT_SORT_KEYS): r for r in aff["ranges"]}
        aff["ranges"] = [uniq[k] for k in sorted(uniq)]
        aff["versions"] = unique(aff["versions"])
        out.append(aff)
    return out


def _kept(
    ctx: ReadContext, tree: ProductTree, vuln: dict[str, Any], name: str, vptr: str, tracking_id: str, publisher: str
) -> list[dict[str, Any]]:
    """``remediations``/``flags``/``threats`` of a vulnerability, verbatim, each with its document id and
    the package identities its product and group ids resolve to."""
    out: list[dict[str, Any]] = []
    for k, raw in enumerate(expect_list(ctx, vuln.get(name), f"{vptr}/{name}")):
        where = f"{vptr}/{name}/{k}"
        item = expect_object(ctx, raw, where)
        products: dict[PackageKey, None] = {}
        for pid in tree.expand(item, where):
            products[_product_entry(tree.identity(pid), publisher)[0]] = None
        listed = [{"ecosystem": e, "package": p, "purl": u} for e, p, u in products]
        out.append({**item, "documentId": tracking_id, "products": listed})
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


class CsafAdvisoryReader:
    """Concelier's CSAF reader: one source record per vulnerability of a CSAF document."""

    format = FORMAT

    def detect(self, doc: Any) -> bool:
        """True for a CSAF document (``document.csaf_version``)."""
        return is_csaf(doc)

    def read(self, doc: Any, ctx: ReadContext) -> ReadResult[Advisory]:
        """The source records of one parsed CSAF document."""
        if not is_csaf(doc):
            raise ctx.error("/document/csaf_version", "is required (this is not a CSAF document)")
        return ReadResult(FORMAT, to_records(Doc(ctx.path), doc, ctx.source, ctx.digest))


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
    ctx = ReadContext(d.path, source, digest)
    tree = ProductTree.load(ctx, raw.get("product_tree"))
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
        affected = _affected(d, d.opt_obj(vuln, "product_status", vptr), f"{vptr}/product_status", tree, publisher)
        record: Advisory = {
            "advisoryKey": key,
            "aliases": sorted(aliases),
            "title": d.opt_str(vuln, "title", vptr) or doc_title or None,
            "summary": _note(d, notes, f"{vptr}/notes", "summary") or _note(d, doc_notes, "/document/notes", "summary"),
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
        for name in ("remediations", "flags", "threats"):
            kept = _kept(ctx, tree, vuln, name, vptr, tracking_id, publisher)
            if kept:
                record[name] = kept
        records.append(record)
    return records
