"""Alias merging: records that share any alias become one canonical advisory.

Which records form a group is decided by :mod:`stella_mirror.concelier.grouping` (a union-find over
record indices, joined through shared alias strings). A group's ``advisoryKey`` is its lowest CVE id —
compared numerically by year, then number, so the choice does not depend on input order — and, when
the group knows no CVE, the id of its highest-priority record (source order as configured, then
document id).

Folding a group is deterministic whatever order the records arrive in, because records are first
sorted by ``(source priority, documentId, digest, record key)``:

- ``aliases``, ``cwes``: sorted union; ``cvss``: union by (version, vector), sorted;
- ``title``, ``summary``, ``description``: first non-empty in record order (source priority);
- ``published``: earliest; ``modified``: latest; ``withdrawn``: latest, but only when *every*
  record is withdrawn (one live source keeps the advisory live);
- ``severity``: the highest any record states;
- ``references``: union by (url, type), sorted; ``provenance``: every record's, sorted;
- ``related``: sorted union;
- ``remediations``/``flags``/``threats`` (CSAF): the distinct items of every record, in record order
  (each names its ``documentId``); absent when no record has any;
- ``affected``: one entry per (ecosystem, package, purl), sorted; ranges (whole, as stated: type, repo,
  events, …) unioned and sorted by their canonical JSON; versions unioned in record order; OSV
  ``severity``/``ecosystemSpecific``/``databaseSpecific`` each the distinct values in record order; a
  bare "fixed in X" range (CSAF) is dropped when another range of the entry has an interval ending at X.
- ``provenance``: every record's entry, each with its own source document (OSV ``osv``): nothing of a
  source is lost by merging.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import orjson

from stella_mirror.concelier.model import SEVERITY_RANK, Advisory, Affected, Range, cve_order, is_cve


def better_cve(current: str | None, candidate: str) -> str:
    """The lower of two CVE ids (numeric order)."""
    if current is None:
        return candidate
    if candidate == current:  # the common case in a merge group: no parsing
        return current
    return candidate if cve_order(candidate) < cve_order(current) else current


def _time_order(stamp: str) -> str:
    # Normalised stamps differ only in whether they carry microseconds; pad so text order is time order.
    return stamp if "." in stamp else stamp[:-1] + ".000000Z"


def _json_key(value: object) -> bytes:
    """Canonical bytes of a JSON value: the identity used to deduplicate and sort structured facts."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _distinct(items: list[Any]) -> list[Any]:
    """Items without duplicates (compared as canonical JSON), first occurrence kept."""
    if len(items) < 2:
        return items
    return list({_json_key(item): item for item in reversed(items)}.values())[::-1]


def _bare_fixed(r: Range) -> str | None:
    """X for a range that only says "fixed in X" (CSAF fixed products), else None."""
    ivs = r["intervals"]
    if r["events"] is None and ivs is not None and len(ivs) == 1:
        iv = ivs[0]
        if iv["introduced"] is None and iv["lastAffected"] is None:
            return iv["fixed"]
    return None


def merge_affected(entries: Iterable[Affected]) -> list[Affected]:
    """Deduplicate affected entries by (ecosystem, package, purl); sort everything."""
    merged: dict[tuple[str, str, str], Affected] = {}
    for aff in entries:
        key = (aff["ecosystem"], aff["package"], aff["purl"] or "")
        into = merged.get(key)
        if into is None:
            merged[key] = {
                "ecosystem": aff["ecosystem"],
                "package": aff["package"],
                "purl": aff["purl"],
                "ranges": list(aff["ranges"]),
                "versions": list(aff["versions"]),
                "severity": list(aff.get("severity", ())),
                "ecosystemSpecific": list(aff.get("ecosystemSpecific", ())),
                "databaseSpecific": list(aff.get("databaseSpecific", ())),
            }
        else:
            into["ranges"].extend(aff["ranges"])
            into["versions"].extend(aff["versions"])
            into["severity"] += aff.get("severity", ())
            into["ecosystemSpecific"] += aff.get("ecosystemSpecific", ())
            into["databaseSpecific"] += aff.get("databaseSpecific", ())
    out = []
    for key in sorted(merged) if len(merged) > 1 else merged:
        aff = merged[key]
        if len(aff["ranges"]) > 1:  # one range is kept as it is: a bare "fixed" is dropped only beside another
            ranges = {_json_key(r): r for r in aff["ranges"]}
            # A bare "fixed in X" (CSAF fixed products) says nothing a full range ending at X does not.
            bounded = {
                iv["fixed"]
                for r in ranges.values()
                for iv in r["intervals"] or ()
                if iv["introduced"] is not None and iv["fixed"] is not None
            }
            aff["ranges"] = [
                ranges[k] for k in sorted(ranges) if (x := _bare_fixed(ranges[k])) is None or x not in bounded
            ]
        if len(aff["versions"]) > 1:
            aff["versions"] = list(dict.fromkeys(aff["versions"]))
        aff["severity"] = _distinct(aff["severity"])
        aff["ecosystemSpecific"] = _distinct(aff["ecosystemSpecific"])
        aff["databaseSpecific"] = _distinct(aff["databaseSpecific"])
        out.append(aff)
    return out


def merge(key: str, records: list[Advisory]) -> Advisory:
    """Fold records already sorted by priority into one advisory keyed ``key``."""
    if len(records) == 1:
        only = records[0]
        if only["advisoryKey"] != key:
            only = {**only, "advisoryKey": key}
            only["aliases"] = sorted({*only["aliases"], key})
        only["affected"] = merge_affected(only["affected"])
        only["related"] = sorted(set(only.get("related", ())))
        return only

    def first(field: str) -> str | None:
        for r in records:
            value = r[field]  # type: ignore[literal-required]
            if value:
                return str(value)
        return None

    published = [r["published"] for r in records if r["published"]]
    modified = [r["modified"] for r in records if r["modified"]]
    withdrawn = [r["withdrawn"] for r in records]
    severities = [r["severity"] for r in records if r["severity"] in SEVERITY_RANK]
    cvss = {(c["version"], c["vector"]): c for r in records for c in r["cvss"]}
    refs = {(ref["url"], ref["type"]): ref for r in records for ref in r["references"]}
    prov = {(p["source"], p["documentId"], p["digest"]): p for r in records for p in r["provenance"]}
    merged: Advisory = {
        "advisoryKey": key,
        "aliases": sorted({key, *(a for r in records for a in r["aliases"])}),
        "title": first("title"),
        "summary": first("summary"),
        "description": first("description"),
        "published": min(published, key=_time_order) if published else None,
        "modified": max(modified, key=_time_order) if modified else None,
        "withdrawn": max((w for w in withdrawn if w), key=_time_order) if all(withdrawn) else None,
        "severity": max(severities, key=lambda s: SEVERITY_RANK[s or "none"]) if severities else None,
        "cvss": [cvss[k] for k in sorted(cvss)],
        "cwes": sorted({c for r in records for c in r["cwes"]}),
        "references": [refs[k] for k in sorted(refs)],
        "affected": merge_affected(a for r in records for a in r["affected"]),
        "provenance": [prov[k] for k in sorted(prov)],
        "related": sorted({x for r in records for x in r.get("related", ())}),
    }
    for name in CSAF_LISTS:  # CSAF (17b): every record's items, each scoped by its documentId
        items = _distinct([x for r in records for x in cast(dict[str, Any], r).get(name, ())])
        if items:
            merged[name] = items  # type: ignore[literal-required]
    return merged


CSAF_LISTS = ("remediations", "flags", "threats")


__all__ = ["better_cve", "is_cve", "merge", "merge_affected"]
