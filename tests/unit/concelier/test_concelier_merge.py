"""Folding records that share aliases: key choice, conflict rules, deduplication."""

from __future__ import annotations

from concelier_helpers import record

from stella_mirror.concelier.merge import better_cve, merge
from stella_mirror.concelier.model import lowest_cve


def test_lowest_cve_is_numeric_not_textual() -> None:
    assert lowest_cve(["CVE-2021-10000", "CVE-2021-9999", "GHSA-x"]) == "CVE-2021-9999"
    assert better_cve("CVE-2021-10000", "CVE-2020-99999") == "CVE-2020-99999"
    assert lowest_cve(["GHSA-x", "PYSEC-1"]) is None


def test_conflicts_resolve_deterministically() -> None:
    osv = record(
        "GO-1",
        ["CVE-2024-1", "GHSA-1"],
        title="",
        summary="from osv",
        published="2024-02-01T00:00:00Z",
        modified="2024-03-01T00:00:00Z",
        severity="medium",
        references=[{"url": "https://a", "type": "WEB"}],
        cvss=[{"version": "3.1", "vector": "CVSS:3.1/X", "baseScore": 5.0}],
        cwes=["CWE-79"],
        affected=[{"ecosystem": "Go", "package": "m", "purl": None, "ranges": [], "versions": ["1.0"]}],
    )
    csaf = record(
        "VENDOR-SA-1",
        ["CVE-2024-1"],
        source="csaf",
        title="vendor title",
        summary="from csaf",
        published="2024-01-15T00:00:00.500000Z",
        modified="2024-02-01T00:00:00Z",
        severity="critical",
        withdrawn="2024-05-01T00:00:00Z",
        references=[{"url": "https://a", "type": "WEB"}, {"url": "https://b", "type": "FIX"}],
        cvss=[{"version": "3.1", "vector": "CVSS:3.1/X", "baseScore": 5.0}],
        cwes=["CWE-20", "CWE-79"],
        affected=[
            {"ecosystem": "Go", "package": "m", "purl": None, "ranges": [], "versions": ["1.1", "1.0"]},
            {"ecosystem": "CPE", "package": "cpe:/a:v:p", "purl": None, "ranges": [], "versions": []},
        ],
    )
    merged = merge("CVE-2024-1", [osv, csaf])  # osv has the higher priority
    assert merged["advisoryKey"] == "CVE-2024-1"
    assert merged["aliases"] == ["CVE-2024-1", "GHSA-1", "GO-1", "VENDOR-SA-1"]
    assert merged["title"] == "vendor title"  # first non-empty
    assert merged["summary"] == "from osv"  # priority order
    assert merged["published"] == "2024-01-15T00:00:00.500000Z"  # earliest
    assert merged["modified"] == "2024-03-01T00:00:00Z"  # latest
    assert merged["withdrawn"] is None  # one live source keeps it live
    assert merged["severity"] == "critical"  # highest
    assert merged["references"] == [{"url": "https://a", "type": "WEB"}, {"url": "https://b", "type": "FIX"}]
    assert merged["cvss"] == [{"version": "3.1", "vector": "CVSS:3.1/X", "baseScore": 5.0}]
    assert merged["cwes"] == ["CWE-20", "CWE-79"]
    assert [(a["ecosystem"], a["versions"]) for a in merged["affected"]] == [("CPE", []), ("Go", ["1.0", "1.1"])]
    assert [p["documentId"] for p in merged["provenance"]] == ["VENDOR-SA-1", "GO-1"]  # sorted by source, id


def test_withdrawn_only_when_every_record_is() -> None:
    a = record("A", ["CVE-1"], withdrawn="2024-01-01T00:00:00Z")
    b = record("B", ["CVE-1"], withdrawn="2024-02-01T00:00:00Z")
    assert merge("CVE-1", [a, b])["withdrawn"] == "2024-02-01T00:00:00Z"


def test_single_record_is_rekeyed_and_sorted() -> None:
    rec = record(
        "GHSA-2",
        [],
        affected=[
            {"ecosystem": "npm", "package": "b", "purl": None, "ranges": [], "versions": []},
            {"ecosystem": "npm", "package": "a", "purl": None, "ranges": [], "versions": []},
        ],
    )
    out = merge("CVE-2030-1", [rec])
    assert out["advisoryKey"] == "CVE-2030-1" and "CVE-2030-1" in out["aliases"]
    assert [a["package"] for a in out["affected"]] == ["a", "b"]
