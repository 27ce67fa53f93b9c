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
from typing import Any, NotRequired, TypedDict

from packageurl import PackageURL

from stella_mirror.errors import MalformedDocumentError
from stella_mirror.timeutil import rfc3339


class Cvss(TypedDict):
    version: str
    vector: str
    baseScore: float | None


class Reference(TypedDict):
    url: str
    type: str


class Interval(TypedDict):
    """A derived version interval: ``introduced`` (inclusive; None = from the first version) up to ``fixed``
    (exclusive) or ``lastAffected`` (inclusive); both None = no upper bound."""

    introduced: str | None
    fixed: str | None
    lastAffected: str | None


class Range(TypedDict):
    """A range as its source states it, plus a derived interval form (docs/concelier.md, "Ranges")."""

    type: str
    """OSV: ``SEMVER``/``ECOSYSTEM``/``GIT`` verbatim; CSAF: ``VERS`` (parsed into ``vers``) or ``TEXT``."""
    repo: str | None
    """OSV GIT ranges: the repository verbatim."""
    events: list[dict[str, str]] | None
    """OSV: the events verbatim (source keys and order); CSAF: None."""
    vers: str | None
    text: str | None
    intervals: list[Interval] | None
    """As OSV's evaluation algorithm gives them with the ecosystem's version order (univers); None when
    that order is not known (GIT, unknown ecosystem, unparsable version)."""
    databaseSpecific: dict[str, Any] | None
    """OSV ``ranges[].database_specific`` verbatim."""


def interval_range(rtype: str, interval: Interval) -> Range:
    """A range known only by one interval (CSAF product ranges and fixed versions): no events, no text."""
    return {
        "type": rtype,
        "repo": None,
        "events": None,
        "vers": None,
        "text": None,
        "intervals": [interval],
        "databaseSpecific": None,
    }


class Severity(TypedDict):
    """An OSV ``severity[]`` entry verbatim."""

    type: str
    score: str


class Affected(TypedDict):
    ecosystem: str
    package: str
    purl: str | None
    ranges: list[Range]
    versions: list[str]
    # OSV (17a): present on every published entry (the merge adds empty ones), absent from CSAF source records.
    severity: NotRequired[list[Severity]]
    """``affected[].severity`` of the folded OSV entries, verbatim, distinct."""
    ecosystemSpecific: NotRequired[list[dict[str, Any]]]
    """Each distinct ``affected[].ecosystem_specific`` of the folded OSV entries (Go: imports and symbols)."""
    databaseSpecific: NotRequired[list[dict[str, Any]]]
    """Each distinct ``affected[].database_specific`` of the folded OSV entries."""


class Provenance(TypedDict):
    source: str
    documentId: str
    digest: str
    recordedAt: str | None
    # OSV (17a)
    osv: NotRequired[dict[str, Any]]
    """The OSV source document itself (parsed JSON or YAML): every field of the source, scoped to this entry."""


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
    # OSV (17a)
    related: NotRequired[list[str]]
    """OSV ``related`` ids (sorted union); present on every published advisory."""
    # CSAF (17b)
    remediations: NotRequired[list[dict[str, Any]]]
    """CSAF ``remediations[]`` verbatim (category, details, url…), each with ``documentId`` and the
    ``products`` (package identities) it names; present only when a CSAF record has some."""
    flags: NotRequired[list[dict[str, Any]]]
    """CSAF ``flags[]`` verbatim, likewise."""
    threats: NotRequired[list[dict[str, Any]]]
    """CSAF ``threats[]`` verbatim, likewise."""


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
    """The rating of the highest v3.x/v4 base score; without one, of the highest v2 score (NVD's v2 scale).

    Every vector a reader keeps is scored, so this is None only when there is no vector at all.
    """
    from stella_mirror.concelier.cvss import rating, rating_v2

    scores = [c["baseScore"] for c in cvss if c["baseScore"] is not None and not c["version"].startswith("2")]
    if scores:
        return rating(max(scores))
    v2 = [c["baseScore"] for c in cvss if c["baseScore"] is not None]
    return rating_v2(max(v2)) if v2 else None


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
# OSV ecosystem (before any ":" suffix such as "Debian:11") → (purl type, namespace), per the purl spec's types:
# distributions' packages are namespaced by their vendor (pkg:deb/debian/…, pkg:rpm/almalinux/…).
_ECOSYSTEM_PURL: dict[str, tuple[str, str | None]] = {
    "PyPI": ("pypi", None),
    "Go": ("golang", None),
    "npm": ("npm", None),
    "crates.io": ("cargo", None),
    "RubyGems": ("gem", None),
    "NuGet": ("nuget", None),
    "Packagist": ("composer", None),
    "Hex": ("hex", None),
    "Pub": ("pub", None),
    "Maven": ("maven", None),
    "Hackage": ("hackage", None),
    "CRAN": ("cran", None),
    "Bitnami": ("bitnami", None),
    "SwiftURL": ("swift", None),
    "GitHub Actions": ("github", None),
    "Debian": ("deb", "debian"),
    "Ubuntu": ("deb", "ubuntu"),
    "Alpine": ("apk", "alpine"),
    "Wolfi": ("apk", "wolfi"),
    "Chainguard": ("apk", "chainguard"),
    "AlmaLinux": ("rpm", "almalinux"),
    "Rocky Linux": ("rpm", "rocky-linux"),
    "Red Hat": ("rpm", "redhat"),
    "SUSE": ("rpm", "suse"),
    "openSUSE": ("rpm", "opensuse"),
    "Mageia": ("rpm", "mageia"),
}
# Types whose package names carry the purl namespace before the last "/" (Go modules, npm scopes, …).
_SLASH_NAMESPACE = {"golang", "npm", "composer", "swift", "github"}


@functools.lru_cache(maxsize=8192)
def purl_for(ecosystem: str, name: str) -> str | None:
    """A version-less purl for an OSV package, built and normalised by ``packageurl`` (the purl spec's rules:
    PyPI names lowercased with ``_`` → ``-``, Maven ``group:artifact`` → namespace/name, …); None when the
    ecosystem has no purl type."""
    known = _ECOSYSTEM_PURL.get(ecosystem.partition(":")[0])
    if known is None or not name:
        return None
    ptype, namespace = known
    if ptype == "maven":
        namespace, sep, name = name.rpartition(":")
        if not sep:
            return None  # not group:artifact
    elif ptype in _SLASH_NAMESPACE and "/" in name:
        namespace, _, name = name.rpartition("/")
    try:
        return str(PackageURL(type=ptype, namespace=namespace or None, name=name).to_string())
    except ValueError:
        return None


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
