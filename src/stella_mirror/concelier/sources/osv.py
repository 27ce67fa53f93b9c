"""OSV (schema 1.x, JSON or YAML) → one canonical source record per document.

Mapping (documented in docs/concelier.md):

- ``advisoryKey``: the lowest CVE among ``id`` + ``aliases``, else ``id``; ``aliases`` = id + aliases.
- ``title`` and ``summary`` = ``summary``; ``description`` = ``details``.
- ``severity[]`` → ``cvss[]`` (CVSS_V3 scores computed from the vector; CVSS_V2/CVSS_V4 keep the vector
  and a null score); other severity types (e.g. ``Ubuntu``) are ignored.
- ``severity`` = ``database_specific.severity`` (``MODERATE`` → ``medium``), else the rating of the
  highest CVSS score.
- ``affected[].ranges[].events`` → ``ranges[{type, introduced, fixed, lastAffected}]``: each
  ``introduced`` opens a range closed by the next ``fixed``/``last_affected``; ``limit`` events bound
  the search in a git history and have no place in the canonical range, so they are dropped.
- Go's zero time ``0001-01-01T00:00:00Z`` (vulndb's "not tracked") becomes null.
- ``related``, ``credits`` and ``*_specific`` are validated for type only where we read them.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypeIs

from stella_mirror.concelier import cvss as cvsslib
from stella_mirror.concelier.model import (
    Advisory,
    Affected,
    Cvss,
    Doc,
    Range,
    Reference,
    lowest_cve,
    normalise_time,
    purl_for,
    severity_from_cvss,
    severity_word,
    split_purl,
)
from stella_mirror.concelier.sources.safeload import load_json, load_yaml

RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
_EVENTS = ("introduced", "fixed", "last_affected", "limit")  # a tuple: order matters for messages


def load(path: str, data: bytes) -> Any:
    """Parse an OSV file by extension: ``.yaml``/``.yml`` as YAML, anything else as JSON."""
    if path.endswith((".yaml", ".yml")):
        return load_yaml(path, data)
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


def _cvss(d: Doc, entries: list[Any]) -> list[Cvss]:
    out: list[Cvss] = []
    for i, raw in enumerate(entries):
        if type(raw) is dict and _nonblank(kind := raw.get("type")) and _nonblank(vector := raw.get("score")):
            vector = vector.strip()
        else:
            ptr = f"/severity/{i}"
            entry = d.obj(raw, ptr)
            kind = d.req_str(entry, "type", ptr)
            vector = d.req_str(entry, "score", ptr).strip()
        if kind == "CVSS_V3":
            version = cvsslib.v3_version(vector)
            if version is None:
                raise d.fail(f"/severity/{i}/score", f"not a CVSS v3 vector: {vector!r}")
            try:
                score: float | None = cvsslib.v3_base_score(vector)
            except cvsslib.CvssError as exc:
                raise d.fail(f"/severity/{i}/score", str(exc)) from None
            out.append({"version": version, "vector": vector, "baseScore": score})
        elif kind == "CVSS_V2":
            out.append({"version": "2.0", "vector": vector, "baseScore": None})
        elif kind == "CVSS_V4":
            out.append({"version": "4.0", "vector": vector, "baseScore": None})
    return out


def _ranges(d: Doc, raw_ranges: list[Any], i: int) -> list[Range]:
    """The ranges of ``/affected/{i}``."""
    out: list[Range] = []
    for j, raw in enumerate(raw_ranges):
        if type(raw) is dict and (rtype := raw.get("type")) in RANGE_TYPES and type(rtype) is str:
            events = raw.get("events")
        else:
            rptr = f"/affected/{i}/ranges/{j}"
            rng = d.obj(raw, rptr)
            rtype = d.req_str(rng, "type", rptr)
            if rtype not in RANGE_TYPES:
                raise d.fail(f"{rptr}/type", f"unknown range type {rtype!r} (expected one of {', '.join(RANGE_TYPES)})")
            events = rng.get("events")
        if type(events) is not list:
            events = d.arr(events, f"/affected/{i}/ranges/{j}/events")
        current: Range | None = None
        for k, raw_ev in enumerate(events):
            if type(raw_ev) is dict and len(raw_ev) == 1:
                ((kind, value),) = raw_ev.items()
            else:
                kind = value = None
            if kind not in _EVENTS or type(value) is not str:
                eptr = f"/affected/{i}/ranges/{j}/events/{k}"
                ev = d.obj(raw_ev, eptr)
                kinds = [e for e in _EVENTS if e in ev]
                if len(kinds) != 1:
                    raise d.fail(eptr, "an event must have exactly one of introduced, fixed, last_affected, limit")
                kind = kinds[0]
                value = d.string(ev[kind], f"{eptr}/{kind}")
            if kind == "introduced":
                if current is not None:
                    out.append(current)
                current = {"type": rtype, "introduced": value, "fixed": None, "lastAffected": None}
            elif kind == "fixed" or kind == "last_affected":
                if current is None:
                    current = {"type": rtype, "introduced": None, "fixed": None, "lastAffected": None}
                current["fixed" if kind == "fixed" else "lastAffected"] = value
                out.append(current)
                current = None
        if current is not None:
            out.append(current)
    return out


def _affected(d: Doc, entries: list[Any]) -> list[Affected]:
    out: list[Affected] = []
    for i, raw in enumerate(entries):
        entry = raw if type(raw) is dict else d.obj(raw, f"/affected/{i}")
        pkg = entry.get("package")
        if pkg is not None and type(pkg) is not dict:
            pkg = d.opt_obj(entry, "package", f"/affected/{i}")
        raw_ranges = entry.get("ranges")
        if raw_ranges is None:
            ranges: list[Range] = []
        else:
            if type(raw_ranges) is not list:
                raw_ranges = d.arr(raw_ranges, f"/affected/{i}/ranges")
            ranges = _ranges(d, raw_ranges, i)
        versions = d.strings(entry, "versions", f"/affected/{i}")
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
        out.append(
            {
                "ecosystem": ecosystem,
                "package": name,
                "purl": purl,
                "ranges": ranges,
                "versions": list(dict.fromkeys(versions)),
            }
        )
    return out


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


def _cvss_order(c: Cvss) -> tuple[str, str]:
    return (c["version"], c["vector"])


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
    if "related" in doc:
        d.strings(doc, "related", "")
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
    severities = doc.get("severity")
    cvss = _cvss(d, severities if type(severities) is list else d.opt_arr(doc, "severity", ""))
    dbs = doc.get("database_specific")
    if dbs is None:
        dbs = {}
    elif type(dbs) is not dict:
        dbs = d.opt_obj(doc, "database_specific", "")
    severity = None
    if isinstance(dbs.get("severity"), str):
        severity = severity_word(dbs["severity"])
    severity = severity or severity_from_cvss(cvss)
    cwes = [c for c in dbs.get("cwe_ids") or [] if isinstance(c, str)] if isinstance(dbs.get("cwe_ids"), list) else []
    ids = {osv_id, *aliases}
    ids.discard("")
    refs = doc.get("references")
    references = _references(d, refs if type(refs) is list else d.opt_arr(doc, "references", ""))
    affected = doc.get("affected")
    if len(cvss) > 1:
        cvss.sort(key=_cvss_order)
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
        "affected": _affected(d, affected if type(affected) is list else d.opt_arr(doc, "affected", "")),
        "provenance": [{"source": source, "documentId": osv_id, "digest": digest, "recordedAt": modified}],
    }
