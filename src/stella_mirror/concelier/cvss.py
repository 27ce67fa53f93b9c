"""CVSS helpers on the maintained ``cvss`` package: parse vectors, base scores for v2, v3.x and v4, ratings.

Scores are the package's (FIRST's formulas: v2 §3.2.1, v3.x §7.1 with Appendix A ``Roundup``, v4's
MacroVector lookup); nothing here recomputes them. Ratings follow each version's qualitative scale:
v3.x and v4 use FIRST's (none/low/medium/high/critical), v2 has none of its own and uses NVD's
(low < 4.0 ≤ medium < 7.0 ≤ high).
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError

_V3_PREFIX = re.compile(r"^CVSS:(3\.[01])/")
_V4_PREFIX = re.compile(r"^CVSS:4\.0/")


class CvssError(ValueError):
    """A CVSS vector that cannot be parsed."""


def v3_version(vector: str) -> str | None:
    """``"3.1"``/``"3.0"`` for a CVSS v3 vector string, None for anything else."""
    m = _V3_PREFIX.match(vector)
    return m.group(1) if m else None


def version_of(kind: str, vector: str) -> str | None:
    """The CVSS version (``2.0``, ``3.0``, ``3.1``, ``4.0``) of an OSV severity entry, None for other types.

    ``kind`` is OSV's ``severity[].type`` (``CVSS_V2``/``CVSS_V3``/``CVSS_V4``); the vector must agree with it.
    """
    if kind == "CVSS_V3":
        return v3_version(vector)
    if kind == "CVSS_V4":
        return "4.0" if _V4_PREFIX.match(vector) else None
    if kind == "CVSS_V2":
        return "2.0" if not vector.startswith("CVSS:") else None
    return None


def _float(value: Decimal) -> float:
    return float(value)


@functools.lru_cache(maxsize=8192)
def base_score(version: str, vector: str) -> float:
    """The base score of a vector of the given CVSS version; :class:`CvssError` when it is invalid."""
    try:
        if version == "2.0":
            return _float(CVSS2(vector).base_score)
        if version in ("3.0", "3.1"):
            if v3_version(vector) != version:
                raise CvssError(f"not a CVSS v{version} vector: {vector!r}")
            return _float(CVSS3(vector).base_score)
        if version == "4.0":
            return _float(CVSS4(vector).base_score)
    except CVSSError as exc:
        raise CvssError(f"invalid CVSS v{version} vector {vector!r}: {exc}") from None
    raise CvssError(f"unknown CVSS version {version!r}")


def v3_base_score(vector: str) -> float:
    """The base score of a CVSS v3.0 or v3.1 vector; :class:`CvssError` when the vector is invalid."""
    version = v3_version(vector)
    if version is None:
        raise CvssError(f"not a CVSS v3 vector: {vector!r}")
    return base_score(version, vector)


def rating(score: float) -> str:
    """Qualitative severity rating of a CVSS v3/v4 score (none, low, medium, high, critical)."""
    if score == 0:
        return "none"
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    if score < 9.0:
        return "high"
    return "critical"


def rating_v2(score: float) -> str:
    """NVD's rating of a CVSS v2 base score (v2 defines no scale of its own): low, medium or high."""
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    return "high"
