"""OSV (schema 1.x, JSON or YAML) → one canonical source record per document.

Mapping (documented in docs/concelier.md):

- ``provenance[0].osv`` is the source document itself: every field survives, scoped to its provenance
  entry, and the document can be rebuilt from the bundle alone.
- ``advisoryKey``: the lowest CVE among ``id`` + ``aliases``, else ``id``; ``aliases`` = id + aliases;
  ``related`` = ``related``.
- ``title`` and ``summary`` = ``summary``; ``description`` = ``details``.
- ``cvss[]`` = every CVSS entry of ``severity[]`` and ``affected[].severity[]`` (v2, v3.x and v4 scored
  with the ``cvss`` package); other severity types (e.g. ``Ubuntu``) stay in ``affected[].severity``.
- ``severity`` = ``database_specific.severity`` (``MODERATE`` → ``medium``), else the rating of the
  highest v3.x/v4 score, else of the highest v2 score.
- ``affected[].ranges[]``: ``type``, ``repo``, ``events`` and ``database_specific`` verbatim, plus the
  ``intervals`` OSV's evaluation algorithm gives with the ecosystem's version order
  (:mod:`stella_mirror.concelier.versions`), or None where that order is unknown (GIT …).
- ``affected[].severity``/``ecosystem_specific``/``database_specific`` verbatim.
- Go's zero time ``0001-01-01T00:00:00Z`` (vulndb's "not tracked") becomes null in the canonical fields.
"""

from __future__ import annotations

from typing import Any

import orjson
from typing_extensions import TypeIs

from stella_mirror.concelier import cvss as cvsslib
from stella_mirror.concelier import versions
from stella_mirror.concelier.model import (
    Advisory,
    Affected,
    Cvss,
    Doc,
    Range,
    Reference,
    Severity,
    lowest_cve,
    normalise_time,
    purl_for,
    severity_from_cvss,
    severity_word,
    split_purl,
)
from stella_mirror.concelier.sources.safeload import load_json, load_yaml
from stella_mirror.errors import MalformedDocumentError

RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
CVSS_TYPES = ("CVSS_V2", "CVSS_V3", "CVSS_V4")
_EVENTS = ("introduced", "fixed", "last_affected", "limit")  # a tuple: order matters for messages


def load(path: str, data: bytes) -> Any:
    """Parse an OSV file by extension: ``.yaml``/``.yml`` as YAML, anything else as JSON."""
    if path.endswith((".yaml", ".yml")):
        doc = load_yaml(path, data)
        # The document itself goes into the bundle (provenance ``osv``): it must have a JSON form.
        try:
            orjson.dumps(doc)
        except TypeError:
            reason = "YAML value without a JSON form (binary, set or non-string key)"
            raise MalformedDocumentError(path, "", reason) from None
        return doc
    return load_json(path, data)


def parse(path: str, data: bytes, source: str, digest: str) -> list[Advisory]:
    """Read one OSV document into its canonical source record."""
    return [to_record(Doc(path), load(path, data), source, digest)]


# Speed: documents are mapped by the hundred thousand, so every function below first checks the shape
# it expects with exact type tests inline and only falls back to the ``Doc`` helpers (which build the
# JSON pointer and raise the error) when such a test fails. Behaviour is that of the helpers alone.


def _nonblank(value: Any) -> TypeIs[str]:
    """What ``Doc.req_str`` accepts without looking further: a non-blank ``str``."""
    return type(value) is str and bool(value) and not value.isspace()


def _severities(d: Doc, entries: list[Any], ptr: str) -> list[Severity]:
    """An OSV ``severity`` array verbatim (``{type, score}`` strings; ``ptr`` is the array's pointer)."""
    out: list[Severity] = []
    for i, raw in enumerate(entries):
        if type(raw) is dict and _nonblank(kind := raw.get("type")) and _nonblank(score := raw.get("score")):
            pass
        else:
            entry = d.obj(raw, f"{ptr}/{i}")
            kind = d.req_str(entry, "type", f"{ptr}/{i}")
            score = d.req_str(entry, "score", f"{ptr}/{i}")
        out.append({"type": kind, "score": score})
    return out


def _cvss(d: Doc, entries: list[Severity], ptr: str) -> list[Cvss]:
    """The CVSS vectors among OSV severity entries, scored; an invalid vector is a malformed document."""
    out: list[Cvss] = []
    for i, entry in enumerate(entries):
        kind = entry["type"]
        if kind not in CVSS_TYPES:
            continue
        vector = entry["score"].strip()
        version = cvsslib.version_of(kind, vector)
        if version is None:
            raise d.fail(f"{ptr}/{i}/score", f"not a {kind} vector: {vector!r}")
        try:
            score = cvsslib.base_score(version, vector)
        except cvsslib.CvssError as exc:
            raise d.fail(f"{ptr}/{i}/score", str(exc)) from None
        out.append({"version": version, "vector": vector, "baseScore": score})
    return out


def _opt_object(d: Doc, parent: dict[str, Any], key: str, ptr: str) -> dict[str, Any] | None:
    """An optional JSON object field, verbatim."""
    value = parent.get(key)
    if value is None or type(value) is dict:
        return value
    return d.obj(value, f"{ptr}/{key}")


def _ranges(d: Doc, raw_ranges: list[Any], i: int, ecosystem: str) -> list[Range]:
    """The ranges of ``/affected/{i}``: events verbatim, intervals derived per OSV's evaluation algorithm."""
    out: list[Range] = []
    for j, raw in enumerate(raw_ranges):
        rptr = f"/affected/{i}/ranges/{j}"
        if type(raw) is dict and (rtype := raw.get("type")) in RANGE_TYPES and type(rtype) is str:
            rng = raw
        else:
            rng = d.obj(raw, rptr)
            rtype = d.req_str(rng, "type", rptr)
            if rtype not in RANGE_TYPES:
                raise d.fail(f"{rptr}/type", f"unknown range type {rtype!r} (expected one of {', '.join(RANGE_TYPES)})")
        events = rng.get("events")
        if type(events) is not list:
            events = d.arr(events, f"{rptr}/events")
        for k, raw_ev in enumerate(events):
            if type(raw_ev) is dict and len(raw_ev) == 1:
                ((kind, value),) = raw_ev.items()
                if kind in _EVENTS and type(value) is str:
                    continue
            eptr = f"{rptr}/events/{k}"
            ev = d.obj(raw_ev, eptr)
            kinds = [e for e in _EVENTS if e in ev]
            if len(kinds) != 1 or len(ev) != 1:
                raise d.fail(eptr, "an event must have exactly one of introduced, fixed, last_affected, limit")
            d.string(ev[kinds[0]], f"{eptr}/{kinds[0]}")
        repo = rng.get("repo")
        if repo is not None and type(repo) is not str:
            repo = d.opt_str(rng, "repo", rptr)
        out.append(
            {
                "type": rtype,
                "repo": repo,
                "events": events,
                "vers": None,
                "text": None,
                "intervals": versions.intervals(rtype, ecosystem, events),
                "databaseSpecific": _opt_object(d, rng, "database_specific", rptr),
            }
        )
    return out


def _affected(d: Doc, entries: list[Any]) -> tuple[list[Affected], list[Cvss]]:
    """The affected entries, and the CVSS vectors of their ``severity`` arrays."""
    out: list[Affected] = []
    cvss: list[Cvss] = []
    for i, raw in enumerate(entries):
        entry = raw if type(raw) is dict else d.obj(raw, f"/affected/{i}")
        pkg = entry.get("package")
        if pkg is not None and type(pkg) is not dict:
            pkg = d.opt_obj(entry, "package", f"/affected/{i}")
        versions_ = d.strings(entry, "versions", f"/affected/{i}")
        if pkg:
            ecosystem = pkg.get("ecosystem")
            name = pkg.get("name")
            purl = pkg.get("purl")
            if not _nonblank(ecosystem):
                ecosystem = d.req_str(pkg, "ecosystem", f"/affected/{i}/package")
            if not _nonblank(name):
                name = d.req_str(pkg, "name", f"/affected/{i}/package")
            if purl is not None and type(purl) is not str:
                purl = d.opt_str(pkg, "purl", f"/affected/{i}/package")
            if purl:
                parsed = split_purl(purl)
                purl = parsed[2] if parsed else purl
            else:
                purl = purl_for(ecosystem, name)
        else:
            # OSV allows git-only entries: the repository stands in for the package.
            repos = [r.get("repo") for r in entry.get("ranges") or [] if isinstance(r, dict) and r.get("repo")]
            if not repos:
                raise d.fail(f"/affected/{i}/package", "required field is missing (and no range names a repo)")
            ecosystem, name, purl = "GIT", d.string(repos[0], f"/affected/{i}/ranges/0/repo"), None
        raw_ranges = entry.get("ranges")
        if raw_ranges is None:
            ranges: list[Range] = []
        else:
            if type(raw_ranges) is not list:
                raw_ranges = d.arr(raw_ranges, f"/affected/{i}/ranges")
            ranges = _ranges(d, raw_ranges, i, ecosystem)
        severity = _severities(d, d.opt_arr(entry, "severity", f"/affected/{i}"), f"/affected/{i}/severity")
        if severity:
            cvss += _cvss(d, severity, f"/affected/{i}/severity")
        eco_specific = _opt_object(d, entry, "ecosystem_specific", f"/affected/{i}")
        db_specific = _opt_object(d, entry, "database_specific", f"/affected/{i}")
        out.append(
            {
                "ecosystem": ecosystem,
                "package": name,
                "purl": purl,
                "ranges": ranges,
                "versions": list(dict.fromkeys(versions_)),
                "severity": severity,
                "ecosystemSpecific": [eco_specific] if eco_specific is not None else [],
                "databaseSpecific": [db_specific] if db_specific is not None else [],
            }
        )
    return out, cvss


def _references(d: Doc, entries: list[Any]) -> list[Reference]:
    out: list[Reference] = []
    for i, raw in enumerate(entries):
        if type(raw) is dict and type(url := raw.get("url")) is str and type(rtype := raw.get("type")) is str and url:
            out.append({"url": url, "type": rtype})
            continue
        ref = d.obj(raw, f"/references/{i}")
        out.append(
            {"url": d.req_str(ref, "url", f"/references/{i}"), "type": d.req_str(ref, "type", f"/references/{i}")}
        )
    return out


# Go's vulndb writes Go's zero time for dates it does not track; that means "unknown", not year 1.
ZERO_TIME = "0001-01-01T00:00:00Z"


def _time(d: Doc, doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    stamp = normalise_time(value, d.path, f"/{key}")
    return None if stamp == ZERO_TIME else stamp


def _reference_order(r: Reference) -> tuple[str, str]:
    return (r["url"], r["type"])


def to_record(d: Doc, raw: Any, source: str, digest: str) -> Advisory:
    """Map a parsed OSV document onto the canonical advisory."""
    doc = raw if type(raw) is dict else d.obj(raw, "")
    osv_id = doc.get("id")
    if not _nonblank(osv_id):
        osv_id = d.req_str(doc, "id", "")
    osv_id = osv_id.strip()
    aliases = [a.strip() for a in d.strings(doc, "aliases", "")]
    related = [r.strip() for r in d.strings(doc, "related", "")]
    if "modified" not in doc:
        raise d.fail("/modified", "required field is missing")
    modified = _time(d, doc, "modified")
    published = _time(d, doc, "published")
    withdrawn = _time(d, doc, "withdrawn")
    summary = doc.get("summary")
    if summary is not None and not isinstance(summary, str):
        d.opt_str(doc, "summary", "")
    details = doc.get("details")
    if details is not None and not isinstance(details, str):
        d.opt_str(doc, "details", "")
    if "credits" in doc:
        d.opt_arr(doc, "credits", "")
    severities = _severities(d, d.opt_arr(doc, "severity", ""), "/severity")
    cvss = _cvss(d, severities, "/severity") if severities else []
    dbs = _opt_object(d, doc, "database_specific", "") or {}
    refs = doc.get("references")
    references = _references(d, refs if type(refs) is list else d.opt_arr(doc, "references", ""))
    entries = doc.get("affected")
    affected, affected_cvss = _affected(d, entries if type(entries) is list else d.opt_arr(doc, "affected", ""))
    cvss = list({(c["version"], c["vector"]): c for c in [*cvss, *affected_cvss]}.values())
    cvss.sort(key=lambda c: (c["version"], c["vector"]))
    severity = None
    if isinstance(dbs.get("severity"), str):
        severity = severity_word(dbs["severity"])
    severity = severity or severity_from_cvss(cvss)
    cwes = [c for c in dbs.get("cwe_ids") or [] if isinstance(c, str)] if isinstance(dbs.get("cwe_ids"), list) else []
    ids = {osv_id, *aliases}
    ids.discard("")
    if len(references) > 1:
        references.sort(key=_reference_order)
    all_ids = sorted(ids)
    return {
        "advisoryKey": lowest_cve(all_ids) or osv_id,
        "aliases": all_ids,
        "title": summary or None,
        "summary": summary or None,
        "description": details or None,
        "published": published,
        "modified": modified,
        "withdrawn": withdrawn,
        "severity": severity,
        "cvss": cvss,
        "cwes": sorted(set(cwes)),
        "references": references,
        "affected": affected,
        "provenance": [{"source": source, "documentId": osv_id, "digest": digest, "recordedAt": modified, "osv": doc}],
        "related": sorted(set(related) - {""}),
    }
