"""CVSS helpers: parse vectors, compute the v3.x base score, map scores to qualitative ratings.

Only CVSS v3.0/v3.1 base scores are computed (FIRST's specification, §7.1 formulas and Appendix A
``Roundup``); v2 and v4 vectors are kept as given with the score the source states, if any.
"""

from __future__ import annotations

import functools
import math
import re

_V3_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_V3_PR = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}
_V3_BASE = ("AV", "AC", "PR", "UI", "S", "C", "I", "A")
# Temporal and environmental metrics may follow the base metrics; they do not change the base score.
_V3_OPTIONAL = {"E", "RL", "RC", "CR", "IR", "AR", "MAV", "MAC", "MPR", "MUI", "MS", "MC", "MI", "MA"}
_V3_PREFIX = re.compile(r"^CVSS:(3\.[01])/")


class CvssError(ValueError):
    """A CVSS vector that cannot be parsed."""


def v3_version(vector: str) -> str | None:
    """``"3.1"``/``"3.0"`` for a CVSS v3 vector string, None for anything else."""
    m = _V3_PREFIX.match(vector)
    return m.group(1) if m else None


def _roundup_31(value: float) -> float:
    # CVSS v3.1 Appendix A: integer arithmetic avoids floating-point artefacts such as 4.000000001.
    int_input = round(value * 100000)
    if int_input % 10000 == 0:
        return int_input / 100000.0
    return (math.floor(int_input / 10000) + 1) / 10.0


def _roundup_30(value: float) -> float:
    return math.ceil(value * 10) / 10.0


@functools.lru_cache(maxsize=4096)
def v3_base_score(vector: str) -> float:
    """The base score of a CVSS v3.0 or v3.1 vector; :class:`CvssError` when the vector is invalid."""
    version = v3_version(vector)
    if version is None:
        raise CvssError(f"not a CVSS v3 vector: {vector!r}")
    metrics: dict[str, str] = {}
    for part in vector.split("/")[1:]:
        name, sep, value = part.partition(":")
        if not sep or not value:
            raise CvssError(f"malformed metric {part!r} in {vector!r}")
        if name in metrics:
            raise CvssError(f"metric {name} repeated in {vector!r}")
        if name not in _V3_BASE and name not in _V3_OPTIONAL:
            raise CvssError(f"unknown metric {name} in {vector!r}")
        metrics[name] = value
    missing = [m for m in _V3_BASE if m not in metrics]
    if missing:
        raise CvssError(f"missing base metric(s) {', '.join(missing)} in {vector!r}")
    scope = metrics["S"]
    if scope not in _V3_PR:
        raise CvssError(f"invalid value S:{scope} in {vector!r}")
    try:
        w = {m: _V3_WEIGHTS[m][metrics[m]] for m in _V3_WEIGHTS}
        pr = _V3_PR[scope][metrics["PR"]]
    except KeyError as exc:
        raise CvssError(f"invalid metric value {exc.args[0]!r} in {vector!r}") from None
    iss = 1 - (1 - w["C"]) * (1 - w["I"]) * (1 - w["A"])
    impact = 6.42 * iss if scope == "U" else 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
    exploitability = 8.22 * w["AV"] * w["AC"] * pr * w["UI"]
    if impact <= 0:
        return 0.0
    roundup = _roundup_31 if version == "3.1" else _roundup_30
    if scope == "U":
        return roundup(min(impact + exploitability, 10))
    return roundup(min(1.08 * (impact + exploitability), 10))


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
