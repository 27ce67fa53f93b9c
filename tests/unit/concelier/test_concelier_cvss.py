"""CVSS v3 base scores: known vectors, invalid vectors, and every score the CSAF corpus states."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stella_mirror.concelier.cvss import CvssError, rating, v3_base_score, v3_version


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
        ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", 8.1),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0),
        # Temporal metrics do not change the base score.
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H/E:P/RL:O/RC:C", 7.5),
    ],
)
def test_known_scores(vector: str, score: float) -> None:
    assert v3_base_score(vector) == score


@pytest.mark.parametrize(
    "vector",
    [
        "AV:N/AC:L/Au:N/C:P/I:P/A:P",  # v2
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",  # A missing
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # bad value
        "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # repeated
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1",  # unknown metric
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A",  # malformed
    ],
)
def test_invalid_vectors(vector: str) -> None:
    with pytest.raises(CvssError):
        v3_base_score(vector)


def test_version_and_rating() -> None:
    assert v3_version("CVSS:3.0/AV:N") == "3.0"
    assert v3_version("CVSS:4.0/AV:N") is None
    assert [rating(s) for s in (0.0, 0.1, 3.9, 4.0, 6.9, 7.0, 8.9, 9.0, 10.0)] == [
        "none",
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
        "critical",
        "critical",
    ]


def test_matches_every_score_stated_in_the_csaf_corpus(corpus: Path) -> None:
    """CSAF publishers state a baseScore next to each vector: an independent check of the calculator."""
    checked = 0
    for path in sorted((corpus / "csaf").rglob("*.json")):
        doc = orjson.loads(path.read_bytes())
        if not isinstance(doc, dict):
            continue
        for vuln in doc.get("vulnerabilities", []):
            for score in vuln.get("scores", []):
                cv = score.get("cvss_v3")
                if cv and "baseScore" in cv:
                    assert v3_base_score(cv["vectorString"]) == cv["baseScore"], (path, cv["vectorString"])
                    checked += 1
    assert checked > 1000
