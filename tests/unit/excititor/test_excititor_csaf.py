"""CSAF reader: csaf_vex documents and product_status in other CSAF categories, from the corpus.

Which corpus files count: every JSON file under corpus/csaf whose content is a CSAF document
(``document.csaf_version``) — 19 ``csaf_vex`` documents and 354 others (security advisories incl. the 344
CISA ICS advisories, Cisco's vendor category, an informational advisory and CSAF 2.1 ``csaf_base``
examples); the ones without ``product_status`` yield no claims. ROLIE feeds, aggregator and
provider-metadata files (9) are not CSAF documents and are not VEX: the loader rejects them as such.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from vexhelpers import read_doc, read_file

from stella_mirror.errors import MalformedDocumentError
from stella_mirror.excititor.config import Provider
from stella_mirror.excititor.consensus import Consensus
from stella_mirror.excititor.sources import detect, parse_json

CSAF_VEX_DOCS, CSAF_VEX_CLAIMS = 19, 115
OTHER_DOCS, OTHER_CLAIMS = 354, 8822
NOT_CSAF = 9


def _family(corpus: Path) -> tuple[collections.Counter[str], collections.Counter[str], list[str]]:
    docs: collections.Counter[str] = collections.Counter()
    claims: collections.Counter[str] = collections.Counter()
    not_csaf = []
    for path in sorted((corpus / "csaf").rglob("*.json")):
        doc = parse_json(path.read_bytes(), str(path))
        if detect(doc) != "csaf":
            not_csaf.append(path.name)
            continue
        family = "csaf_vex" if doc["document"]["category"] == "csaf_vex" else "other"
        docs[family] += 1
        claims[family] += len(read_file(path).items)
    return docs, claims, not_csaf


def test_every_corpus_csaf_document_reads(corpus: Path) -> None:
    docs, claims, not_csaf = _family(corpus)
    assert docs == {"csaf_vex": CSAF_VEX_DOCS, "other": OTHER_DOCS}
    assert claims == {"csaf_vex": CSAF_VEX_CLAIMS, "other": OTHER_CLAIMS}
    assert len(not_csaf) == NOT_CSAF


def _one(claims: list, vuln: str, product: str):  # type: ignore[no-untyped-def]
    found = [c for c in claims if c.vulnerability_id == vuln and c.product_key == product]
    assert len(found) == 1, found
    return found[0]


def test_flag_label_is_the_justification(corpus: Path) -> None:
    claims = read_file(corpus / "csaf/oasis-tcs/csaf_2.0/examples/csaf/csaf_vex/sec-vex-2022-0001.json").items
    c = _one(claims, "CVE-2021-44228", "csaf:SEC-VEX-2022-0001:CSAFPID-0001")
    assert (c.status, c.justification) == ("not_affected", "component_not_present")
    assert c.detail == "Secvisogram is written in JavaScript. No Java is included."
    assert c.issued_at is not None and c.counts


def test_purl_product_and_impact_without_flag(corpus: Path) -> None:
    """vexctl/csaf.json CVE-2009-4487: known_not_affected justified by a threats[category=impact]
    statement (what CSAF 2.0 requires when there is no flag) counts, and consensus says not_affected."""
    (c,) = read_file(corpus / "csaf/vexctl/csaf.json").items
    assert (c.vulnerability_id, c.product_key, c.status) == ("CVE-2009-4487", "pkg:maven/@1.3.4", "not_affected")
    statement = "Class with vulnerable code was removed before shipping."
    assert (c.justification, c.impact_statement, c.detail) == (None, statement, statement)
    assert c.counts
    assert c.issued_at == "2022-03-03T11:00:00Z"
    record = Consensus([c], [Provider("p", "vendor", 1.0, ("x",))]).record(("CVE-2009-4487", "pkg:maven/@1.3.4"))
    assert (record["status"], record["resolution"], record["impactStatement"]) == ("not_affected", "single", statement)
    assert [e["reason"] for e in record["claims"]] == [None]


def test_mixed_statuses_and_remediation_detail(corpus: Path) -> None:
    claims = read_file(corpus / "csaf/oasis-tcs/csaf_2.0/examples/csaf/csaf_vex/2022-evd-uc-03-ms-001.json").items
    statuses = collections.Counter(c.status for c in claims)
    assert statuses == {"under_investigation": 5, "not_affected": 6, "affected": 5, "fixed": 3}
    c = _one(claims, "CVE-2020-11898", "csaf:2022-EVD-UC-03-MS-001:CSAFPID-0001")
    assert c.status == "affected"
    assert c.detail == "none_available: We are working to integrate the upstream patches in our code."


def test_first_fixed_and_fixed_count_once_and_cpe_products(corpus: Path) -> None:
    claims = read_file(corpus / "csaf/oasis-tcs/csaf_2.0/examples/csaf/bsi-2022-0001.json").items
    assert len(claims) == 6
    c = _one(claims, "CVE-2022-27193", "cpe:/a:csaf-tools:cvrf-csaf-converter:1.0.0-rc2")
    assert c.status == "fixed"
    assert sum(1 for c in claims if c.status == "affected") == 5


def test_relationship_products_without_identifiers_are_qualified(corpus: Path) -> None:
    claims = read_file(corpus / "csaf/oasis-tcs/csaf_2.0/examples/csaf/rhsa-2021_5186.json").items
    assert collections.Counter(c.status for c in claims) == {"fixed": 2, "not_affected": 4}
    assert all(c.product_key.startswith("csaf:RHSA-2021:5186:8Base-RHOSE-4.6:openshift4/") for c in claims)


def test_csaf21_product_paths_and_missing_cve(corpus: Path) -> None:
    path = corpus / "csaf/oasis-tcs/csaf_2.1/examples/csaf/appendix/oasis_csaf_tc-csaf_2_1-2024-d-14.json"
    claims = read_file(path).items
    tracking = parse_json(path.read_bytes(), "")["document"]["tracking"]["id"]
    assert {c.vulnerability_id for c in claims} == {f"csaf:{tracking}:vulnerabilities/0"}
    assert {c.status for c in claims} == {"under_investigation"}
    assert sorted(c.product_key for c in claims) == [
        f"csaf:{tracking}:CSAFPID-908070607",
        f"csaf:{tracking}:CSAFPID-908070608",
    ]


def _csaf(vulnerabilities: list[dict[str, object]], tree: dict[str, object]) -> dict[str, object]:
    return {
        "document": {
            "category": "csaf_vex",
            "csaf_version": "2.0",
            "tracking": {"id": "T-1", "current_release_date": "2024-03-01T12:00:00+01:00"},
        },
        "product_tree": tree,
        "vulnerabilities": vulnerabilities,
    }


TREE = {
    "branches": [
        {
            "category": "vendor",
            "name": "V",
            "branches": [
                {
                    "category": "product_name",
                    "name": "lib",
                    "product": {
                        "name": "lib 1",
                        "product_id": "LIB",
                        "product_identification_helper": {"purl": "pkg:deb/v/lib@1"},
                    },
                },
                {
                    "category": "product_name",
                    "name": "os",
                    "product": {
                        "name": "os 9",
                        "product_id": "OS",
                        "product_identification_helper": {"cpe": "cpe:/o:v:os:9"},
                    },
                },
                {"category": "product_name", "name": "bare", "product": {"name": "bare", "product_id": "BARE"}},
            ],
        }
    ],
    "relationships": [
        {
            "category": "default_component_of",
            "product_reference": "LIB",
            "relates_to_product_reference": "OS",
            "full_product_name": {"name": "lib on os", "product_id": "OS:LIB"},
        }
    ],
    "product_groups": [{"group_id": "G", "product_ids": ["OS:LIB", "BARE"]}],
}


def test_relationship_group_flags_and_statuses() -> None:
    vuln = {
        "cve": "CVE-2024-7",
        "ids": [
            {"system_name": "GitHub", "text": "GHSA-aaaa-bbbb-cccc"},
            {"system_name": "BZ", "text": "https://bz/1"},
        ],
        "product_status": {"known_not_affected": ["OS:LIB", "BARE"], "last_affected": ["OS"], "recommended": ["LIB"]},
        "flags": [{"label": "vulnerable_code_not_present", "group_ids": ["G"]}],
        "threats": [{"category": "impact", "details": "not compiled in", "product_ids": ["OS:LIB"]}],
    }
    claims = read_doc(_csaf([vuln], TREE)).items
    by_key = {c.product_key: c for c in claims}
    assert set(by_key) == {"pkg:deb/v/lib@1", "csaf:T-1:BARE", "cpe:/o:v:os:9"}
    lib = by_key["pkg:deb/v/lib@1"]
    assert (lib.status, lib.justification, lib.detail, lib.impact_statement) == (
        "not_affected",
        "vulnerable_code_not_present",
        "not compiled in",
        "not compiled in",
    )
    assert lib.context == {"csafProductId": "OS:LIB", "platform": "cpe:/o:v:os:9"}
    assert by_key["csaf:T-1:BARE"].justification == "vulnerable_code_not_present"
    assert by_key["csaf:T-1:BARE"].impact_statement is None  # the impact threat names OS:LIB only
    assert by_key["cpe:/o:v:os:9"].status == "affected"
    assert lib.aliases == ("GHSA-aaaa-bbbb-cccc",)  # the Bugzilla URL is not folded on
    assert lib.issued_at == "2024-03-01T11:00:00Z"


@pytest.mark.parametrize(
    ("vuln", "pointer"),
    [
        ({"cve": "CVE-1", "product_status": {"fixed": "LIB"}}, "/vulnerabilities/0/product_status/fixed"),
        ({"cve": "CVE-1", "product_status": {"fixed": [7]}}, "/vulnerabilities/0/product_status/fixed/0"),
        (
            {"cve": "CVE-1", "product_status": {"fixed": ["LIB"]}, "flags": [{"product_ids": ["LIB"]}]},
            "/vulnerabilities/0/flags/0/label",
        ),
    ],
)
def test_malformed_csaf_names_pointer(vuln: dict[str, object], pointer: str) -> None:
    with pytest.raises(MalformedDocumentError) as info:
        read_doc(_csaf([vuln], TREE), name="distro/nw.json")
    assert (info.value.path, info.value.pointer) == ("distro/nw.json", pointer)


def test_missing_tracking_id() -> None:
    doc = _csaf([], TREE)
    doc["document"] = {"csaf_version": "2.0", "tracking": {}}
    with pytest.raises(MalformedDocumentError) as info:
        read_doc(doc)
    assert info.value.pointer == "/document/tracking/id"
