"""CSAF version ranges across CISA's advisories in the shared corpus: never garbled.

Every ``product_version_range`` branch name, and every ``product_version`` name that is a range
expression, of every CISA document comes out either as a ``VERS`` range whose ``vers`` univers parses
and whose interval bounds are the source's own version tokens, or as a ``TEXT`` range holding the
source's words verbatim. Plain forms that read unambiguously (``<V2.3``, ``vers:all/*``,
``>=1.03|<=4.02``, ``>=V2.8<V3.1.1``) must be ``VERS``. The corpus grows, so nothing is pinned: the
expectations come from the strings themselves.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from univers.version_range import VersionRange

from stella_mirror.concelier.sources import csaf
from stella_mirror.concelier.sources.csaf_ranges import looks_like_range

_V = r"[Vv]?\d+(?:\.\d){0,1}(?:\.\d+){0,2}"
PLAIN = re.compile(rf"^(?:vers:all/\*|(?:vers:all/)?(?:<|<=|>=)\s*{_V}|>=\s*{_V}\s*\|?\s*<=?\s*{_V})$")
"""Forms that must parse: at most three numeric parts, so ``generic``'s semver order is exact."""


def _version_strings(corpus: Path) -> list[tuple[str, str]]:
    """(branch category, name) of every version branch of every CISA CSAF document."""
    out: list[tuple[str, str]] = []
    for path in sorted((corpus / "csaf" / "cisagov").rglob("*.json")):
        doc: Any = orjson.loads(path.read_bytes())
        if not csaf.is_csaf(doc):
            continue
        stack = list(doc.get("product_tree", {}).get("branches", []))
        while stack:
            branch = stack.pop()
            if branch.get("category") in ("product_version", "product_version_range"):
                out.append((branch["category"], branch["name"]))
            stack.extend(branch.get("branches", []))
    return out


def test_cisa_version_strings_are_ranges_or_verbatim_text(corpus: Path) -> None:
    strings = _version_strings(corpus)
    outcome: Counter[str] = Counter()
    assert strings
    for category, text in strings:
        if category == "product_version" and not looks_like_range(text):
            continue  # one version, not a range
        rng, exact = csaf.version_range(text, None)
        outcome[rng["type"]] += 1
        assert rng["text"] == text and rng["events"] is None and rng["repo"] is None
        if rng["type"] == "TEXT":
            assert (rng["vers"], rng["intervals"], exact) == (None, None, [])
            assert not PLAIN.match(text.strip()), f"{text!r} reads unambiguously but was kept as text"
            continue
        assert rng["type"] == "VERS" and rng["vers"] is not None
        VersionRange.from_string(rng["vers"])  # univers parses what we wrote
        tokens = set(re.split(r"[|<>=!/*\s]+", rng["vers"].split("/", 1)[1])) - {""}
        # every bound is one of the source's own version tokens, verbatim: nothing glued or split
        assert tokens <= set(re.split(r"[|<>=!/*\s]+|^vers:\w+/|^all versions", text, flags=re.IGNORECASE))
        for iv in rng["intervals"] or []:
            for bound in iv.values():
                assert bound is None or (bound in tokens and " " not in bound and "<" not in bound), (text, iv)
    assert outcome["VERS"] > 0
