"""CycloneDX VEX reader: states, justifications, bom-ref and BOM-Link resolution, from the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from vexhelpers import read_doc, read_file

from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.errors import MalformedDocumentError
from stella_mirror.excititor.claims import Claim
from stella_mirror.excititor.sources import ReadContext, parse_json
from stella_mirror.excititor.sources.cyclonedx import BomIndex, parse_bom_link

# Claims per file of corpus/cyclonedx-vex (24 documents: 14 VEX, 10 BOMs without vulnerabilities).
EXPECTED_CDX = {
    "VEX/vex.json": 1,
    "VEX/bom.json": 0,
    "VEX/Use-Cases/Case-1/vex.json": 1,
    "VEX/Use-Cases/Case-2/vex.json": 1,
    "VEX/Use-Cases/Case-3/vex.json": 1,
    "VEX/Use-Cases/Case-4/vex.json": 1,
    "VEX/Use-Cases/Case-5/vex.json": 2,
    "VEX/Use-Cases/Case-6/vex.json": 3,
    "VEX/Use-Cases/Case-7/vex.json": 0,  # affects nothing: a warning, no claim
    "VEX/Use-Cases/Case-8/vex.json": 1,
    "VEX/Use-Cases/Case-9/vex.json": 57,
    "VEX/Use-Cases/Case-10/vex.json": 1,
    "VEX/Use-Cases/Case-11/vex.json": 19,
    "VEX/Use-Cases/Case-12/vex.json": 3,
    "VEX/Use-Cases/Case-13/vex.json": 3,
    **{f"VEX/Use-Cases/Case-{n}/bom-{i}.json": 0 for n in (6, 9, 13) for i in (1, 2, 3)},
}


def _boms(root: Path) -> BomIndex:
    boms = BomIndex()
    for path in root.rglob("*.json"):
        data = path.read_bytes()
        boms.add(parse_json(data, str(path)), ReadContext(str(path), "p", sha256_bytes(data)))
    return boms


def test_every_corpus_cyclonedx_document_reads(corpus: Path) -> None:
    root = corpus / "cyclonedx-vex/bom-examples"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))
    assert files == sorted(EXPECTED_CDX)
    boms = _boms(root)
    counts = {rel: len(read_file(root / rel, boms=boms).items) for rel in files}
    assert counts == EXPECTED_CDX
    assert sum(counts.values()) == 94


def test_state_and_justification_mapping(corpus: Path) -> None:
    root = corpus / "cyclonedx-vex/bom-examples/VEX/Use-Cases"
    (c1,) = read_file(root / "Case-1/vex.json").items
    assert (c1.vulnerability_id, c1.status, c1.justification) == (
        "CVE-2020-25649",
        "not_affected",
        "vulnerable_code_not_in_execute_path",
    )
    assert c1.context == {"cyclonedxJustification": "code_not_reachable"}
    assert c1.detail is not None and c1.detail.endswith("response: will_not_fix, update")
    assert c1.issued_at == "2022-01-13T00:00:00Z"
    # "acme-product" is the document's own metadata component, which has no purl: qualified by the document.
    digest = sha256_bytes((root / "Case-1/vex.json").read_bytes())
    assert c1.product_key == f"cdx:{digest}#acme-product"
    assert [c.status for c in read_file(root / "Case-2/vex.json").items] == ["affected"]
    assert [c.status for c in read_file(root / "Case-3/vex.json").items] == ["under_investigation"]
    twelve = {c.vulnerability_id: c for c in read_file(root / "Case-12/vex.json").items}
    assert twelve["CVE-2020-14195"].justification == "inline_mitigations_already_exist"
    assert twelve["CVE-2020-35491"].justification is None


def test_versions_are_kept_in_context(corpus: Path) -> None:
    claims = read_file(corpus / "cyclonedx-vex/bom-examples/VEX/Use-Cases/Case-5/vex.json").items
    assert [c.status for c in claims] == ["affected", "not_affected"]
    assert claims[0].context == {"versions": [{"range": "vers:semver/<7.0.0|>=1.5.0", "status": "affected"}]}


def test_bom_link_into_supplied_boms(corpus: Path) -> None:
    root = corpus / "cyclonedx-vex/bom-examples/VEX/Use-Cases/Case-6"
    boms = _boms(root)
    claims = read_file(root / "vex.json", boms=boms).items
    # The BOMs' components have no purl, so the (resolved) BOM-Link is the product key.
    assert sorted(c.product_key for c in claims) == [
        "urn:cdx:240b5b0b-917d-4f48-816c-97e1944d8079/1#acme-product-3",
        "urn:cdx:2c385cf7-e1ee-46e9-a51c-13de1ecb380a/1#acme-product-1",
        "urn:cdx:6ffac0b2-5246-4fb9-a6fe-7993041856a0/1#acme-product-2",
    ]


def test_bom_link_to_an_absent_bom_falls_back_to_a_purl_fragment(corpus: Path) -> None:
    root = corpus / "cyclonedx-vex/bom-examples/VEX"
    # vex.json links into BOM serial 3e671687-…, while the bom.json beside it has serial 5f0f0da9-…
    (c,) = read_file(root / "vex.json", boms=_boms(root)).items
    assert c.product_key == "pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.10.0?type=jar"
    assert c.context is not None and c.context["bomLinkResolved"] is False
    assert c.aliases == ("SNYK-JAVA-COMFASTERXMLJACKSONCORE-1048302",)


def test_bom_link_resolves_to_component_purl() -> None:
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "urn:uuid:11111111-2222-3333-4444-555555555555",
        "version": 2,
        "components": [
            {
                "bom-ref": "outer",
                "name": "o",
                "purl": "pkg:npm/outer@1",
                "components": [{"bom-ref": "inner", "name": "i", "purl": "pkg:npm/inner@2"}],
            }
        ],
    }
    boms = BomIndex()
    data = b"{}"
    assert boms.add(bom, ReadContext("bom.json", "p", sha256_bytes(data)))
    vex = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "components": [{"bom-ref": "local", "name": "l", "cpe": "cpe:2.3:a:x:l:1:*:*:*:*:*:*:*"}],
        "vulnerabilities": [
            {
                "id": "GHSA-1111-2222-3333",
                "references": [{"id": "CVE-2024-5", "source": {"name": "NVD"}}],
                "analysis": {"state": "resolved", "lastUpdated": "2024-06-01T00:00:00Z"},
                "affects": [
                    {"ref": "urn:cdx:11111111-2222-3333-4444-555555555555/2#inner"},
                    {"ref": "local"},
                    {"ref": "nowhere"},
                ],
            }
        ],
    }
    claims = read_doc(vex, name="hub/v.json", boms=boms).items
    assert [c.product_key for c in claims][:2] == ["pkg:npm/inner@2", "cpe:2.3:a:x:l:1:*:*:*:*:*:*:*"]
    assert claims[2].product_key.startswith("cdx:sha256:") and claims[2].product_key.endswith("#nowhere")
    assert {c.status for c in claims} == {"fixed"}
    assert {c.issued_at for c in claims} == {"2024-06-01T00:00:00Z"}
    assert claims[0].aliases == ("CVE-2024-5",)


def test_parse_bom_link() -> None:
    assert parse_bom_link("urn:cdx:abc/3#pkg%3Anpm%2Fx") == ("urn:uuid:abc", "3", "pkg:npm/x")
    assert parse_bom_link("acme-product") is None


@pytest.mark.parametrize(
    ("vuln", "pointer"),
    [
        (
            {"id": "CVE-1", "analysis": {"state": "maybe"}, "affects": [{"ref": "x"}]},
            "/vulnerabilities/0/analysis/state",
        ),
        (
            {"id": "CVE-1", "analysis": {"state": "not_affected", "justification": "vibes"}, "affects": [{"ref": "x"}]},
            "/vulnerabilities/0/analysis/justification",
        ),
        ({"id": "CVE-1", "analysis": {"state": "in_triage"}, "affects": [{}]}, "/vulnerabilities/0/affects/0/ref"),
        ({"analysis": {"state": "in_triage"}, "affects": [{"ref": "x"}]}, "/vulnerabilities/0/id"),
    ],
)
def test_malformed_cyclonedx_names_pointer(vuln: dict[str, object], pointer: str) -> None:
    doc = {"bomFormat": "CycloneDX", "specVersion": "1.4", "vulnerabilities": [vuln]}
    with pytest.raises(MalformedDocumentError) as info:
        read_doc(doc, name="hub/bad.cdx.json")
    assert (info.value.path, info.value.pointer) == ("hub/bad.cdx.json", pointer)


def test_not_affected_is_justified_by_justification_or_detail() -> None:
    """CycloneDX analysis.justification / analysis.detail play the roles of CSAF flags / impact statements."""

    def one(analysis: dict[str, object]) -> Claim:
        vuln = {"id": "CVE-2024-8", "analysis": analysis, "affects": [{"ref": "pkg:pypi/a@1"}]}
        (c,) = read_doc({"bomFormat": "CycloneDX", "specVersion": "1.5", "vulnerabilities": [vuln]}).items
        return c

    labelled = one({"state": "not_affected", "justification": "code_not_reachable"})
    assert (labelled.justification, labelled.impact_statement, labelled.counts) == (
        "vulnerable_code_not_in_execute_path",
        None,
        True,
    )
    stated = one({"state": "not_affected", "detail": " The parser is not built in this image. "})
    assert (stated.justification, stated.impact_statement, stated.counts) == (
        None,
        "The parser is not built in this image.",
        True,
    )
    assert stated.detail == "The parser is not built in this image."
    bare = one({"state": "not_affected", "response": ["will_not_fix"]})
    assert (bare.impact_statement, bare.counts) == (None, False)
    exploitable = one({"state": "exploitable", "detail": "reachable"})
    assert (exploitable.impact_statement, exploitable.detail) == (None, "reachable")
