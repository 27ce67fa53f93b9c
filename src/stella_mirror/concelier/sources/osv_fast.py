"""The fast path of the OSV reader: the decoded document checked against typed structs, then mapped.

:func:`to_record` in :mod:`.osv` checks every value of a generic ``dict`` tree that orjson built and
names the JSON pointer of the first problem. Most documents have exactly the expected shape, so this
module converts orjson's tree with msgspec into :class:`msgspec.Struct` types that describe that
shape — types are checked in C — and maps the structs onto the canonical record. The compiled module
(``_osvc.c``, :func:`compiled_entry`) does the same in one pass over the bytes; :func:`python_entry`
is its reference and its fallback.

It only ever *accepts*: whenever a document is not of the common shape (a type the structs do not
allow, a field no OSV schema version defines, a timestamp not already in canonical form, a value the
mapping would reject, …) :func:`fast_record` returns None and the caller runs the exact reader, which
maps the document or raises the precise :class:`~stella_mirror.errors.MalformedDocumentError`. So the
records, the rejections and their messages are those of :func:`.osv.to_record` by construction; what
this module must guarantee is that it returns a record only where that function returns the same one.

The document is decoded by orjson, the exact reader's own parser, so both see the same values (a
number orjson refuses, a key given twice, invalid UTF-8 anywhere): msgspec decoding the bytes itself
accepted integers of any size that orjson refuses. Every struct forbids unknown fields; fields that
the mapping does not read are typed ``Any``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NamedTuple

import msgspec
import orjson

from stella_mirror.concelier import cvss as cvsslib
from stella_mirror.concelier.model import lowest_cve, purl_for, severity_word, split_purl

_RANGE_TYPES = frozenset(("ECOSYSTEM", "SEMVER", "GIT"))
_CANONICAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$").match
ZERO_TIME = "0001-01-01T00:00:00Z"


class _Fallback(Exception):
    """The document is not of the common shape: let the exact reader handle it."""


class _Package(msgspec.Struct, forbid_unknown_fields=True):
    ecosystem: str
    name: str
    purl: str | None = None


class _Range(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    events: list[dict[str, str]]
    repo: Any = None
    database_specific: Any = None


class _Affected(msgspec.Struct, forbid_unknown_fields=True):
    package: _Package | None = None
    ranges: list[_Range] | None = None
    versions: list[str] | None = None
    severity: Any = None
    ecosystem_specific: Any = None
    database_specific: Any = None


class _Severity(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    score: str


class _Reference(msgspec.Struct, forbid_unknown_fields=True):
    # Also the output's reference: its two fields are in canonical (sorted) order.
    type: str
    url: str


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    modified: str
    schema_version: Any = None
    published: str | None = None
    withdrawn: str | None = None
    aliases: list[str] | None = None
    upstream: Any = None
    related: list[str] | None = None
    summary: str | None = None
    details: str | None = None
    severity: list[_Severity] | None = None
    affected: list[_Affected] | None = None
    references: list[_Reference] | None = None
    credits: Any = None
    database_specific: dict[str, Any] | None = None


_FALLBACK_ERRORS = (msgspec.ValidationError, orjson.JSONDecodeError, RecursionError, _Fallback)


def _decode(data: bytes) -> _Document:
    return msgspec.convert(orjson.loads(data), _Document)


def _time(value: str | None) -> str | None:
    if value is None:
        return None
    if not _CANONICAL_TIME(value):
        raise _Fallback
    return None if value == ZERO_TIME else value


# --- canonical single-record entries -----------------------------------------------------------------
#
# What the staging step needs from a document is the canonical bytes of its single-record advisory
# (``orjson.dumps(canonical_record(to_record(…)), option=OPT_SORT_KEYS)``). :func:`fast_entry` builds
# them without the intermediate dicts: the structs below declare their fields in sorted order and
# msgspec encodes a struct's fields in declaration order, so its output is those bytes. msgspec and
# orjson write strings identically (every code point checked) and the only floats here are CVSS base
# scores, multiples of 0.1 in [0, 10], which both write in plain decimal notation (checked too, see
# tests/unit/concelier/test_osv_fast.py); a score outside that range takes the general path.


class _OutRange(msgspec.Struct):
    fixed: str | None
    introduced: str | None
    lastAffected: str | None
    type: str


class _OutAffected(msgspec.Struct):
    ecosystem: str
    package: str
    purl: str | None
    ranges: list[_OutRange]
    versions: list[str]


class _OutCvss(msgspec.Struct):
    baseScore: float | None
    vector: str
    version: str


class _OutProvenance(msgspec.Struct):
    digest: str
    documentId: str
    recordedAt: str | None
    source: str


class _OutAdvisory(msgspec.Struct):
    advisoryKey: str
    affected: list[_OutAffected]
    aliases: list[str]
    cvss: list[_OutCvss]
    cwes: list[str]
    description: str | None
    modified: str | None
    provenance: list[_OutProvenance]
    published: str | None
    references: list[_Reference]
    severity: str | None
    summary: str | None
    title: str | None
    withdrawn: str | None


_encode = msgspec.json.Encoder().encode
_NO_RANGE: Any = object()


# Memo tables: corpora repeat a handful of CVSS vectors and package names many times over. Each maps
# its input to exactly what the code below it computes (or to None: decline), and is cleared when full.
_MEMO_MAX = 1 << 14
_cvss_memo: dict[tuple[str, str], tuple[_OutCvss | None, float | None] | None] = {}
_package_memo: dict[tuple[str, str, str | None], str | None] = {}


def _one_cvss(kind: str, raw_vector: str) -> tuple[_OutCvss | None, float | None] | None:
    """``(entry or None for an ignored type, v3 score or None)``; None when the general path must decide."""
    if not kind or kind.isspace() or not raw_vector or raw_vector.isspace():
        return None
    vector = raw_vector.strip()
    if kind == "CVSS_V3":
        version = cvsslib.v3_version(vector)
        if version is None:
            return None
        try:
            score = cvsslib.v3_base_score(vector)
        except cvsslib.CvssError:
            return None
        if not 0.0 <= score <= 10.0:
            return None
        return _OutCvss(score, vector, version), score
    if kind == "CVSS_V2":
        return _OutCvss(None, vector, "2.0"), None
    if kind == "CVSS_V4":
        return _OutCvss(None, vector, "4.0"), None
    return None, None


def _out_cvss(entries: list[_Severity]) -> tuple[list[_OutCvss], str | None]:
    """The cvss list (sorted) and the rating of the highest v3 score (``severity_from_cvss``).

    The entries are shared between records (memo table): they are never modified.
    """
    out: list[_OutCvss] = []
    best: float | None = None
    memo = _cvss_memo
    for raw in entries:
        key = (raw.type, raw.score)
        known = memo.get(key, _NO_RANGE)
        if known is _NO_RANGE:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            known = memo[key] = _one_cvss(*key)
        if known is None:
            raise _Fallback
        entry, score = known
        if entry is not None:
            out.append(entry)
            if score is not None and (best is None or score > best):
                best = score
    if len(out) > 1:
        out.sort(key=_cvss_key)
    return out, (cvsslib.rating(best) if best is not None else None)


def _package_purl(ecosystem: str, name: str, purl: str | None) -> str | None:
    """The affected entry's purl (as ``osv._affected`` derives it); raises _Fallback for a blank name."""
    key = (ecosystem, name, purl)
    memo = _package_memo
    if key in memo:
        return memo[key]
    if not ecosystem or ecosystem.isspace() or not name or name.isspace():
        raise _Fallback
    out: str | None
    if purl:
        parsed = split_purl(purl)
        out = parsed[2] if parsed else purl
    else:
        out = purl_for(ecosystem, name)
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = out
    return out


def _cvss_key(c: _OutCvss) -> tuple[str, str]:
    return (c.version, c.vector)


def _range_key(r: _OutRange) -> tuple[str, str, str, str]:
    return (r.type, r.introduced or "", r.fixed or "", r.lastAffected or "")


def _out_ranges(raw_ranges: list[_Range]) -> list[_OutRange]:
    out: list[_OutRange] = []
    for raw in raw_ranges:
        rtype = raw.type
        if rtype not in _RANGE_TYPES:
            raise _Fallback
        current = _NO_RANGE  # the ``introduced`` of the open range
        for ev in raw.events:
            if len(ev) != 1:
                raise _Fallback
            ((kind, value),) = ev.items()
            if kind == "introduced":
                if current is not _NO_RANGE:
                    out.append(_OutRange(None, current, None, rtype))
                current = value
            elif kind == "fixed":
                out.append(_OutRange(value, None if current is _NO_RANGE else current, None, rtype))
                current = _NO_RANGE
            elif kind == "last_affected":
                out.append(_OutRange(None, None if current is _NO_RANGE else current, value, rtype))
                current = _NO_RANGE
            elif kind != "limit":
                raise _Fallback
        if current is not _NO_RANGE:
            out.append(_OutRange(None, current, None, rtype))
    if len(out) > 1:  # merge.merge_affected: unique, sorted, a bare "fixed" beside a range ending there dropped
        unique = {_range_key(r): r for r in out}
        bounded = {r.fixed for r in unique.values() if r.introduced is not None}
        out = [
            unique[k]
            for k in sorted(unique)
            if not (unique[k].introduced is None and unique[k].lastAffected is None and k[2] in bounded)
        ]
    return out


def _affected_key(a: _OutAffected) -> tuple[str, str, str]:
    return (a.ecosystem, a.package, a.purl or "")


def _out_affected(entries: list[_Affected]) -> list[_OutAffected]:
    out: list[_OutAffected] = []
    for entry in entries:
        pkg = entry.package
        if pkg is None:
            raise _Fallback
        ecosystem, name = pkg.ecosystem, pkg.name
        purl = _package_purl(ecosystem, name, pkg.purl)
        versions = entry.versions
        out.append(
            _OutAffected(
                ecosystem,
                name,
                purl,
                _out_ranges(entry.ranges) if entry.ranges else [],
                list(dict.fromkeys(versions)) if versions else [],
            )
        )
    if len(out) > 1:
        out.sort(key=_affected_key)
        keys = list(map(_affected_key, out))
        if len(set(keys)) != len(keys):  # entries to fold into one: the general path
            raise _Fallback
    return out


def _ref_key(r: _Reference) -> tuple[str, str]:
    return (r.url, r.type)


class Entry(NamedTuple):
    """A document's canonical single-record advisory, ready to stage."""

    blob: bytes
    """``orjson.dumps(advisory, option=OPT_SORT_KEYS)``."""
    key: str
    aliases: list[str]
    cve: str | None
    """The lowest CVE among the aliases (the key when there is one)."""
    recorded_at: str | None


def fast_entry(data: bytes, source: str, digest: str) -> Entry | None:
    """What staging needs of an OSV JSON document of the common shape, or None: use the general path.

    :func:`compiled_entry` when the compiled module is built (``pip install`` builds it), else
    :func:`python_entry`: both accept only documents the exact reader maps to the same record, and
    give the same bytes (tests compare all three).
    """
    if _osvc_entry is None:
        return python_entry(data, source, digest)
    return compiled_entry(data, source, digest)


def compiled_entry(data: bytes, source: str, digest: str) -> Entry | None:
    """:func:`fast_entry` through the compiled module, which parses, checks, maps and encodes in C."""
    if _osvc_entry is None:
        raise RuntimeError("the compiled OSV module (_osvc) is not built: pip install the package")
    got = _osvc_entry(data, source, digest)
    return None if got is None else _make_entry(got)


def python_entry(data: bytes, source: str, digest: str) -> Entry | None:
    """:func:`fast_entry` in Python: msgspec decodes into typed structs, which are mapped and encoded."""
    try:
        doc = _decode(data)
        osv_id = doc.id
        if not osv_id or osv_id.isspace():
            return None
        osv_id = osv_id.strip()
        modified = _time(doc.modified)
        published = _time(doc.published)
        withdrawn = _time(doc.withdrawn)
        cvss, cvss_rating = _out_cvss(doc.severity) if doc.severity else ([], None)
        dbs = doc.database_specific
        severity = None
        cwes: list[str] = []
        if dbs:
            word = dbs.get("severity")
            if isinstance(word, str):
                severity = severity_word(word)
            ids = dbs.get("cwe_ids")
            if isinstance(ids, list) and ids:
                cwes = sorted({c for c in ids if isinstance(c, str)})
        refs = doc.references
        if refs:
            for ref in refs:
                if not ref.url:
                    return None
            if len(refs) > 1:
                refs.sort(key=_ref_key)
        if doc.aliases:
            names = set(map(str.strip, doc.aliases))
            names.discard("")
            names.add(osv_id)
            all_ids = sorted(names)
        else:
            all_ids = [osv_id]
        cve = lowest_cve(all_ids)
        key = cve or osv_id
        summary = doc.summary or None
        adv = _OutAdvisory(
            key,
            _out_affected(doc.affected) if doc.affected else [],
            all_ids,
            cvss,
            cwes,
            doc.details or None,
            modified,
            [_OutProvenance(digest, osv_id, modified, source)],
            published,
            refs or [],
            severity or cvss_rating,
            summary,
            summary,
            withdrawn,
        )
    except _FALLBACK_ERRORS:
        return None
    return Entry(_encode(adv), key, all_ids, cve, modified)


# --- the compiled fast path -------------------------------------------------------------------------
#
# ``_osvc.entry`` does what :func:`python_entry` does, parsing the JSON itself and writing the
# canonical bytes itself (see _osvc.c). What needs tables or rules stays here and the module calls it,
# remembering the answers: the functions below answer in the shapes it expects.


def _c_cvss(kind: str, raw: str) -> tuple[Any, ...] | None:
    """None: decline; ``()``: a type that is ignored; else ``(baseScore, vector, version, v3 score)``.

    The compiled module remembers the answers (this runs once per distinct type and vector).
    """
    known = _one_cvss(kind, raw)
    if known is None:
        return None
    entry, score = known
    return () if entry is None else (entry.baseScore, entry.vector, entry.version, score)


def _c_purl(ecosystem: str, name: str, purl: str | None) -> str | bool | None:
    """The affected entry's purl, or False: decline."""
    try:
        return _package_purl(ecosystem, name, purl)
    except _Fallback:
        return False


_make_entry = Entry._make
_osvc_entry: Any = None
compiled_stage: Any = None
"""``_osvc.stage`` (see _osvc.c and ``staging.Stager``) when the compiled module is built, else None."""
compiled_stage_files: Any = None
"""``_osvc.stage_files`` likewise."""
compiled_list_dir: Any = None
"""``_osvc.list_dir`` (a folder's files and folders, as ``iter_file_lists`` lists them) when built, else None."""
compiled_fold_singles: Any = None
"""``_osvc.fold_singles`` (staging's copy of records final as staged) when built, else None."""
compiled_merge: Any = None
"""``_osvc.merge`` (merge.merge of two or more staged records in C) likewise."""
compiled_count_files: Any = None
"""``_osvc.count_files`` (the export's count of a source's files) likewise."""
compiled_module: Any = None
"""The compiled module itself when built, else None: for its helpers without an alias of their own here
(grouping's union-find, staging's alias pairs, the export's ``tune_malloc``)."""
COMPILED = False
"""Whether the compiled module is in use."""
try:
    from stella_mirror.concelier.sources import _osvc
except ImportError:  # a source tree that was never built: python_entry does the same, slower
    pass
else:
    _osvc.configure(_c_cvss, _c_purl, severity_word, hashlib.sha256)
    _osvc_entry = _osvc.entry
    compiled_stage = _osvc.stage
    compiled_stage_files = _osvc.stage_files
    compiled_merge = _osvc.merge
    compiled_fold_singles = _osvc.fold_singles
    compiled_list_dir = _osvc.list_dir
    compiled_count_files = _osvc.count_files
    compiled_module = _osvc
    COMPILED = True
