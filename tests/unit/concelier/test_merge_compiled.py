"""``_osvc.merge`` (merging staged records in C) against ``merge.merge``.

Where the compiled merge answers, its bytes must be exactly ``orjson.dumps(merge.merge(key, records
in merge order), OPT_SORT_KEYS)``; it may decline (None) and leave the group to Python. Compared on
merge groups built from the shared corpus (OSV and CSAF records) and on randomly edited records.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from stella_mirror.concelier.merge import merge
from stella_mirror.concelier.sources import canonical_record, load_records, order_key, osv_fast

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus"
_SORT = orjson.OPT_SORT_KEYS


def _python(key: str, records: list[tuple[int, bytes]]) -> bytes:
    loaded = sorted(((p, orjson.loads(blob)) for p, blob in records), key=lambda r: order_key(*r))
    return orjson.dumps(merge(key, [rec for _, rec in loaded]), option=_SORT)


def _check(key: str, records: list[tuple[int, bytes]]) -> bool:
    """Assert the compiled merge agrees where it answers; True when it did."""
    assert osv_fast.compiled_merge is not None, "the compiled module is not built"
    got = osv_fast.compiled_merge(key, records)
    if got is None:
        return False
    assert got == _python(key, records)
    return True


def _record(**changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "advisoryKey": "CVE-2024-0001",
        "affected": [
            {
                "ecosystem": "PyPI",
                "package": "demo",
                "purl": "pkg:pypi/demo",
                "ranges": [{"fixed": "1.0", "introduced": "0", "lastAffected": None, "type": "ECOSYSTEM"}],
                "versions": ["0.1", "0.2"],
            }
        ],
        "aliases": ["CVE-2024-0001", "GHSA-aaaa"],
        "cvss": [{"baseScore": 9.8, "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "version": "3.1"}],
        "cwes": ["CWE-79"],
        "description": "details",
        "modified": "2024-01-02T00:00:00Z",
        "provenance": [
            {"digest": "sha256:aa", "documentId": "GHSA-aaaa", "recordedAt": "2024-01-02T00:00:00Z", "source": "osv"}
        ],
        "published": "2024-01-01T00:00:00Z",
        "references": [{"type": "WEB", "url": "https://a.example"}],
        "severity": "high",
        "summary": "s",
        "title": "s",
        "withdrawn": None,
    }
    rec.update(changes)
    return rec


_EDITS: list[tuple[str, list[Any]]] = [
    ("published", [None, "", "2023-12-31T23:59:59.999999Z", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.000000Z"]),
    ("modified", [None, "2024-02-01T00:00:00Z", "2024-02-01T00:00:00.5Z", "2024-02-01T00:00:00.500000Z"]),
    ("withdrawn", [None, "2024-03-01T00:00:00Z", "2024-03-01T00:00:00.000001Z"]),
    ("severity", [None, "low", "medium", "critical", "none", "bogus", ""]),
    ("title", [None, "", "t\u00e9 \"q\" \\ \n", "other"]),
    ("summary", [None, "", "sum"]),
    ("description", [None, "", "d\u2028\U0001f600"]),
    ("cwes", [[], ["CWE-20", "CWE-79"], ["CWE-1"]]),
    ("aliases", [[], ["CVE-2024-0002"], ["GHSA-aaaa", "PYSEC-1"]]),
    ("references", [[], [{"type": "ADVISORY", "url": "https://a.example"}, {"type": "WEB", "url": "https://b.example"}]]),
    (
        "cvss",
        [
            [],
            [{"baseScore": 7.5, "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "version": "3.1"}],
            [{"baseScore": None, "vector": "AV:N/AC:L/Au:N/C:P/I:P/A:P", "version": "2.0"}],
        ],
    ),
    (
        "affected",
        [
            [],
            [
                {
                    "ecosystem": "PyPI",
                    "package": "demo",
                    "purl": "pkg:pypi/demo",
                    "ranges": [
                        {"fixed": "1.0", "introduced": None, "lastAffected": None, "type": "ECOSYSTEM"},
                        {"fixed": None, "introduced": "2.0", "lastAffected": None, "type": "ECOSYSTEM"},
                    ],
                    "versions": ["0.2", "0.3", "0.2"],
                }
            ],
            [{"ecosystem": "Go", "package": "example.org/m", "purl": None, "ranges": [], "versions": []}],
            [{"ecosystem": "PyPI", "package": "demo", "purl": None, "ranges": [], "versions": ["9"]}],
            [{"ecosystem": "npm", "package": "x", "purl": "", "ranges": [], "versions": []}],
            [
                {
                    "ecosystem": "PyPI",
                    "package": "demo",
                    "purl": "pkg:pypi/demo",
                    "ranges": [{"fixed": "", "introduced": "0", "lastAffected": None, "type": "ECOSYSTEM"}],
                    "versions": [],
                }
            ],
        ],
    ),
]


def _random_record(rng: random.Random, n: int) -> dict[str, Any]:
    rec = _record()
    for field, values in rng.sample(_EDITS, rng.randint(0, 5)):
        rec[field] = rng.choice(values)
    doc = rng.choice(["GHSA-aaaa", "GHSA-bbbb", "PYSEC-1"])
    source = rng.choice(["osv", "csaf"])
    digest = f"sha256:{rng.randrange(3):02d}"
    rec["provenance"] = [{"digest": digest, "documentId": doc, "recordedAt": rec["modified"], "source": source}]
    rec["advisoryKey"] = rng.choice(["CVE-2024-0001", doc])
    return rec


def test_random_records_merge_alike() -> None:
    rng = random.Random(2026)
    taken = 0
    for n in range(1500):
        size = rng.randint(2, 4)
        group = [(rng.randrange(3), orjson.dumps(_random_record(rng, n), option=_SORT)) for _ in range(size)]
        taken += _check(rng.choice(["CVE-2024-0001", "GHSA-aaaa"]), group)
    assert taken > 1000  # most groups are merged in C (those with "" in a range or purl are declined)


def test_one_record_or_odd_input_is_declined() -> None:
    blob = orjson.dumps(_record(), option=_SORT)
    assert osv_fast.compiled_merge is not None
    assert osv_fast.compiled_merge("K", [(0, blob)]) is None  # merge.merge keeps a lone record as it is
    assert osv_fast.compiled_merge("K", [(0, blob), (0, blob + b" x")]) is None
    unsorted = orjson.dumps(_record()).replace(b'{"advisoryKey"', b'{"zz": 1, "advisoryKey"')
    assert osv_fast.compiled_merge("K", [(0, blob), (0, unsorted)]) is None


def test_corpus_records_merge_alike() -> None:
    """Groups of records from the shared corpus (OSV and CSAF), both the real alias groups and random ones."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    staged: list[tuple[int, bytes, list[str]]] = []
    for prio, (kind, folder) in enumerate((("csaf", CORPUS / "csaf"), ("osv", CORPUS / "osv"))):
        for path in sorted(folder.rglob("*"))[::3]:  # every third file keeps the test quick
            if not path.is_file():
                continue
            status, payload = load_records(str(path), kind, kind, 1 << 24)
            if status != "ok":
                continue
            for rec in payload:  # type: ignore[attr-defined]
                final = canonical_record(rec)
                staged.append((prio, orjson.dumps(final, option=_SORT), final["aliases"]))
    by_alias: dict[str, list[int]] = {}
    for i, (_p, _b, aliases) in enumerate(staged):
        for a in aliases:
            by_alias.setdefault(a, []).append(i)
    real = [idx for idx in by_alias.values() if len(idx) > 1]
    rng = random.Random(7)
    groups = real + [rng.sample(range(len(staged)), rng.randint(2, 4)) for _ in range(800)]
    taken = sum(_check(rng.choice(["CVE-2024-1", "A"]), [(staged[i][0], staged[i][1]) for i in g]) for g in groups)
    assert len(real) > 20 and taken > 0.9 * len(groups)
