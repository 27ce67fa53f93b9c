"""The canonical advisory (DESIGN §4) and the small helpers every source reader shares.

A reader turns one input document into zero or more *source records*: canonical advisories built
from that document alone. :mod:`stella_mirror.concelier.merge` later folds records that share an
alias into one advisory. Both have exactly the shape below, so a single-source advisory needs no
conversion at all.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any, TypedDict

from stella_mirror.errors import MalformedDocumentError
from stella_mirror.timeutil import rfc3339


class Cvss(TypedDict):
    version: str
    vector: str
    baseScore: float | None


class Reference(TypedDict):
    url: str
    type: str


class Range(TypedDict):
    type: str
    introduced: str | None
    fixed: str | None
    lastAffected: str | None


class Affected(TypedDict):
    ecosystem: str
    package: str
    purl: str | None
    ranges: list[Range]
    versions: list[str]


class Provenance(TypedDict):
    source: str
    documentId: str
    digest: str
    recordedAt: str | None


class Advisory(TypedDict):
    advisoryKey: str
    aliases: list[str]
    title: str | None
    summary: str | None
    description: str | None
    published: str | None
    modified: str | None
    withdrawn: str | None
    severity: str | None
    cvss: list[Cvss]
    cwes: list[str]
    references: list[Reference]
    affected: list[Affected]
    provenance: list[Provenance]


SEVERITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
# Words sources use for severities, mapped onto the CVSS qualitative scale (GHSA says MODERATE).
_SEVERITY_WORDS = {
    "none": "none",
    "low": "low",
    "moderate": "medium",
    "medium": "medium",
    "important": "high",
    "high": "high",
    "critical": "critical",
}

_CANONICAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
_CVE = re.compile(r"^CVE-(\d{4})-(\d{4,})$")
_ONLY_STR = {str}


def is_cve(alias: str) -> bool:
    """True for ``CVE-YYYY-NNNN…`` identifiers."""
    return _CVE.match(alias) is not None


def cve_order(alias: str) -> tuple[int, int, str]:
    """Numeric order of CVE ids, so CVE-2021-9999 sorts before CVE-2021-10000."""
    m = _CVE.match(alias)
    assert m is not None
    return (int(m.group(1)), int(m.group(2)), alias)


def lowest_cve(aliases: list[str] | set[str]) -> str | None:
    """The lowest CVE id (by year, then number) among ``aliases``, or None."""
    match = _CVE.match
    cves = [a for a in aliases if a[:4] == "CVE-" and match(a)]
    if len(cves) < 2:
        return cves[0] if cves else None
    return min(cves, key=cve_order)


def severity_word(value: str) -> str | None:
    """Normalise a source's severity word (``HIGH``, ``MODERATE``, ``Important``) or None if unknown."""
    return _SEVERITY_WORDS.get(value.strip().lower())


def severity_from_cvss(cvss: list[Cvss]) -> str | None:
    """The rating of the highest v3/v4 base score, when a score is known."""
    from stella_mirror.concelier.cvss import rating

    scores = [c["baseScore"] for c in cvss if c["baseScore"] is not None and not c["version"].startswith("2")]
    return rating(max(scores)) if scores else None


def normalise_time(value: Any, path: str, pointer: str) -> str:
    """An RFC 3339 timestamp in UTC with ``Z``; date-only values mean midnight UTC.

    YAML readers hand us strings (timestamps are not resolved, see ``sources.osv``); a datetime is
    accepted too, so a different YAML loader still yields the same text.
    """
    if type(value) is str and _CANONICAL_TIME.match(value):
        return value  # already RFC 3339 UTC in the form we write: the common case, skip parsing
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return rfc3339(dt)
    if not isinstance(value, str):
        raise MalformedDocumentError(path, pointer, f"expected an RFC 3339 timestamp string, got {type_name(value)}")
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise MalformedDocumentError(path, pointer, f"{value!r} is not an RFC 3339 timestamp") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return rfc3339(dt)


def type_name(value: Any) -> str:
    """JSON type names for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Doc:
    """Typed access to a parsed document that raises :class:`MalformedDocumentError` with a JSON pointer."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, pointer: str, reason: str) -> MalformedDocumentError:
        return MalformedDocumentError(self.path, pointer, reason)

    def obj(self, value: Any, pointer: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(pointer, f"expected an object, got {type_name(value)}")
        return value

    def arr(self, value: Any, pointer: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(pointer, f"expected an array, got {type_name(value)}")
        return value

    def strings(self, parent: dict[str, Any], key: str, pointer: str) -> list[str]:
        """An optional array of strings (empty when absent)."""
        value = parent.get(key)
        if value is None:
            return []
        if type(value) is list and (not value or set(map(type, value)) == _ONLY_STR):
            return value
        items = self.arr(value, f"{pointer}/{key}")
        return [self.string(v, f"{pointer}/{key}/{i}") for i, v in enumerate(items)]

    def string(self, value: Any, pointer: str) -> str:
        if not isinstance(value, str):
            raise self.fail(pointer, f"expected a string, got {type_name(value)}")
        return value

    def opt_obj(self, parent: dict[str, Any], key: str, pointer: str) -> dict[str, Any]:
        value = parent.get(key)
        return {} if value is None else self.obj(value, f"{pointer}/{key}")

    def opt_arr(self, parent: dict[str, Any], key: str, pointer: str) -> list[Any]:
        value = parent.get(key)
        return [] if value is None else self.arr(value, f"{pointer}/{key}")

    def opt_str(self, parent: dict[str, Any], key: str, pointer: str) -> str | None:
        value = parent.get(key)
        return None if value is None else self.string(value, f"{pointer}/{key}")

    def req_str(self, parent: dict[str, Any], key: str, pointer: str) -> str:
        value = parent.get(key)
        if type(value) is str and value and not value.isspace():
            return value
        if value is None:
            raise self.fail(f"{pointer}/{key}", "required field is missing")
        text = self.string(value, f"{pointer}/{key}")
        if not text.strip():
            raise self.fail(f"{pointer}/{key}", "must not be empty")
        return text


def unique(items: list[str]) -> list[str]:
    """Items without duplicates, first occurrence kept."""
    return list(dict.fromkeys(items))


_PURL_ECOSYSTEMS = {
    "pypi": "PyPI",
    "golang": "Go",
    "npm": "npm",
    "maven": "Maven",
    "cargo": "crates.io",
    "gem": "RubyGems",
    "nuget": "NuGet",
    "composer": "Packagist",
    "hex": "Hex",
    "pub": "Pub",
    "swift": "SwiftURL",
    "deb": "Debian",
    "apk": "Alpine",
    "rpm": "RPM",
    "github": "GitHub",
}
_ECOSYSTEM_PURL = {
    "PyPI": "pypi",
    "Go": "golang",
    "npm": "npm",
    "crates.io": "cargo",
    "RubyGems": "gem",
    "NuGet": "nuget",
    "Packagist": "composer",
    "Hex": "hex",
    "Pub": "pub",
}


_PEP503_SEPARATORS = re.compile(r"[-_.]+")


@functools.lru_cache(maxsize=8192)
def purl_for(ecosystem: str, name: str) -> str | None:
    """A version-less purl for well-known ecosystems (PyPI names normalised per PEP 503)."""
    ptype = _ECOSYSTEM_PURL.get(ecosystem)
    if ptype is None:
        return None
    if ptype == "pypi":
        name = _PEP503_SEPARATORS.sub("-", name).lower()
    return f"pkg:{ptype}/{name}"


def split_purl(purl: str) -> tuple[str, str, str, str | None] | None:
    """``(ecosystem, package, base purl, version)`` for ``pkg:type/ns/name@version?qualifiers#sub``.

    The base purl drops version, qualifiers and subpath so that all versions of one package share
    one ``affected`` entry. Returns None for strings that are not purls.
    """
    if not purl.startswith("pkg:"):
        return None
    body = purl[4:].split("#", 1)[0].split("?", 1)[0]
    ptype, sep, rest = body.partition("/")
    if not sep or not rest:
        return None
    name, _, version = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if not name:
        return None
    ptype = ptype.lower()
    ecosystem = _PURL_ECOSYSTEMS.get(ptype, ptype)
    package = name.replace("/", ":") if ptype == "maven" else name
    return ecosystem, package, f"pkg:{ptype}/{name}", version or None
