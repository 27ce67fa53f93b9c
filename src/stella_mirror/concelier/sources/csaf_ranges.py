"""CSAF product version ranges → ``vers:`` ranges (univers), or the source's words kept verbatim.

CSAF 2.0 says a ``product_version_range`` branch name *should* be a ``vers:`` string and may be free
text; publishers use both, and free text also shows up in ``product_version`` names. Seen in CISA's
advisories: ``vers:all/*``, ``vers:all/<V2.4.0`` (``all`` with constraints, which vers does not
allow), ``<V2.3``, ``<=9.1.08``, ``>=1.03|<=4.02``, ``>=V2.8<V3.1.1``, ``>= V2.5 < V2.6.1``,
``All versions < V4.33`` — and words such as ``<V2.0_SP1`` or
``>=V3.2.3_<V3.3.0_only_when_manufactured_between…``.

:func:`parse` turns such a string into a :class:`Parsed` range only when it reads unambiguously:

* a ``vers:<scheme>/…`` string that univers parses, for a scheme other than ``all``, is taken as is;
* anything else (free text, ``vers:all/<constraints>``) is read as a list of constraints
  ``<op><version>`` (ops ``>=``, ``>``, ``<=``, ``<``, ``=``, ``!=``), separated by ``|``, ``,``,
  whitespace or nothing, optionally after the words ``All versions``; no constraint means ``*``.
  Versions are plain dotted numbers with an optional ``V``/``v`` prefix (``V2.6.1``, ``2024.2``) unless
  the product has a purl whose type univers knows, in which case that scheme's version syntax applies.
  The result is written as ``vers:<scheme>/…`` with the source's version tokens verbatim, constraints
  sorted by univers; the scheme is the purl type's, else ``generic``.

It is ambiguous — the caller keeps the text verbatim as a ``TEXT`` range — when a token is not such a
version (``V2.0_SP1``, ``R3.08.10``, words), when univers cannot order two versions strictly (e.g.
``3.5.19.0`` and ``3.5.19.1`` differ only beyond the semver core that ``generic`` compares), or when
the constraints do not form intervals (two lower bounds in a row, ``>=`` after ``<``).

Intervals are derived from the sorted constraints as vers defines them: ``>=A`` opens an interval that
the next ``<B`` (fixed) or ``<=B`` (last affected) closes; a leading upper bound opens at the first
version (``introduced`` None); ``*`` is every version; ``=X`` adds an exact version. A range with
``>`` or ``!=`` keeps its ``vers`` but has no interval form (``intervals`` None): it cannot be written
as introduced/fixed/lastAffected without inventing a version.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from univers.version_range import RANGE_CLASS_BY_SCHEMES, VersionRange

_VERSION_RANGE: Any = VersionRange  # univers is untyped
GENERIC = "generic"
_OPS = (">=", "<=", "!=", ">", "<", "=")
_NUMERIC = re.compile(r"[Vv]?\d+(?:\.\d+)*")
_BROAD = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+~_:-]*")
_ALL_VERSIONS = re.compile(r"^all\s+versions\b\s*", re.IGNORECASE)
_RANGE_START = re.compile(r"^\s*(?:vers:|all\s+versions\b|[<>=!]=?\s*[Vv]?\d)", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    """A range that read unambiguously."""

    vers: str
    intervals: list[dict[str, str | None]] | None
    """introduced/fixed/lastAffected intervals, or None when the constraints have no interval form."""
    versions: list[str] = field(default_factory=list)
    """Exact versions (``=X`` constraints), verbatim."""


def looks_like_range(text: str) -> bool:
    """True for a version string that is a range expression rather than one version (``<V2.3``,
    ``vers:all/*``, ``All versions < V4.33``, ``>= V2.5 < V2.6.1``)."""
    return bool(_RANGE_START.match(text))


def scheme_for(purl_type: str | None) -> str:
    """The vers scheme for a product: its purl type when univers knows it, else ``generic``."""
    if purl_type and purl_type.lower() in RANGE_CLASS_BY_SCHEMES and purl_type.lower() != "all":
        return purl_type.lower()
    return GENERIC


def _constraints(body: str, token: re.Pattern[str]) -> list[tuple[str, str]] | None:
    """``[(op, version), …]`` from free text, or None when some part is not a constraint."""
    rest = body.strip()
    if not rest or rest == "*":
        return [("*", "")]
    out: list[tuple[str, str]] = []
    while rest:
        op = next((o for o in _OPS if rest.startswith(o)), "")
        rest = rest[len(op) :].lstrip()
        m = token.match(rest)
        if m is None:
            return None
        version, rest = m.group(0), rest[m.end() :]
        if rest and not (rest[0] in "|, " or rest.startswith(_OPS)):
            return None  # the version runs on into something else (V2.0_SP1, 1.04E, a word)
        out.append((op or "=", version))
        rest = rest.lstrip(" ,|")
    return out


def _intervals(constraints: list[tuple[str, str]]) -> tuple[list[dict[str, str | None]] | None, list[str]] | None:
    """Intervals and exact versions from constraints sorted by version; None when they do not form
    intervals (ambiguous); intervals None when they have no interval form (``>``, ``!=``)."""
    intervals: list[dict[str, str | None]] = []
    versions: list[str] = []
    lower: str | None = None
    opened = False  # a lower bound waits for its upper bound
    closed = False  # the previous constraint was an upper bound
    expressible = True
    for op, version in constraints:
        if op == "*":
            intervals.append({"introduced": None, "fixed": None, "lastAffected": None})
        elif op == "=" or op == "!=":
            if opened:
                return None  # an exact version inside an interval
            if op == "=":
                versions.append(version)
            expressible &= op == "="
        elif op in (">=", ">"):
            if opened:
                return None  # two lower bounds in a row
            lower, opened = version, True
            expressible &= op == ">="
        else:  # "<" or "<="
            if closed and not opened:
                return None  # two upper bounds in a row
            intervals.append(
                {
                    "introduced": lower,
                    "fixed": version if op == "<" else None,
                    "lastAffected": version if op == "<=" else None,
                }
            )
            lower, opened = None, False
        closed = op in ("<", "<=")
    if opened:
        intervals.append({"introduced": lower, "fixed": None, "lastAffected": None})
    return (intervals if expressible else None), versions


def _from_univers(vers: str) -> tuple[str, list[tuple[str, str]]] | None:
    """``(scheme, constraints sorted by version)`` of a vers string univers parses with a strict order."""
    try:
        parsed: Any = _VERSION_RANGE.from_string(vers)
    except Exception:  # univers raises several types (ValueError, InvalidVersion, TypeError…)
        return None
    constraints = list(parsed.constraints)
    for a, b in itertools.pairwise(constraints):
        if a.comparator == "*" or b.comparator == "*" or not a.version < b.version:
            return None  # "*" beside other constraints, or two versions univers cannot tell apart
    pairs = [(c.comparator, "" if c.comparator == "*" else c.version.string) for c in constraints]
    return str(parsed.scheme), pairs


def _vers(scheme: str, constraints: list[tuple[str, str]]) -> str:
    return f"vers:{scheme}/" + "|".join("*" if op == "*" else f"{op}{v}" for op, v in constraints)


def parse(text: str, purl_type: str | None = None) -> Parsed | None:
    """The structured form of a CSAF version range, or None when it does not read unambiguously."""
    stripped = text.strip()
    if stripped.lower().startswith("vers:") and "/" in stripped:
        scheme, body = stripped[5:].split("/", 1)
        if scheme.lower() != "all" or body.strip() == "*":
            found = _from_univers(stripped)
            if found is None:
                return None
            derived = _intervals(found[1])
            if derived is None:
                return None
            # a valid vers string is kept as the source wrote it
            return Parsed(stripped if scheme.lower() != "all" else _vers("all", found[1]), derived[0], derived[1])
        free = body  # "vers:all/<V2.4.0": vers' "all" takes no constraints; read them as free text
    else:
        free = _ALL_VERSIONS.sub("", stripped)
    scheme = scheme_for(purl_type)
    constraints = _constraints(free, _NUMERIC if scheme == GENERIC else _BROAD)
    if constraints is None:
        return None
    if constraints == [("*", "")]:
        return Parsed("vers:all/*", [{"introduced": None, "fixed": None, "lastAffected": None}])
    found = _from_univers(_vers(scheme, constraints))
    if found is None:
        return None
    derived = _intervals(found[1])
    if derived is None:
        return None
    return Parsed(_vers(scheme, found[1]), derived[0], derived[1])
