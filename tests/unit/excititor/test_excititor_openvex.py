"""OpenVEX reader: the corpus (v0.0.1 and v0.2.0) and hand-written edge cases."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from vexhelpers import read_doc, read_file

from stella_mirror.errors import MalformedDocumentError

# Claims per file of corpus/openvex (14 documents, 19 claims). test.vex.json's statements name no
# products (allowed by the v0.0.1 examples): read without rejection, no claims, one warning each.
EXPECTED_OPENVEX = {
    "vexctl/examples/csaf/openvex.json": 1,
    "vexctl/examples/openvex/demo.vex.json": 2,
    "vexctl/examples/openvex/document1.vex.json": 1,
    "vexctl/examples/openvex/document2.vex.json": 1,
    "vexctl/examples/sarif/sample-1statement.openvex.json": 1,
    "vexctl/examples/sarif/sample-2vulns.openvex.json": 2,
    "vexctl/examples/sarif/sample-history.openvex.json": 2,
    "vexctl/pkg/ctl/testdata/images.vex.json": 4,
    "vexctl/pkg/ctl/testdata/templates/oci-vexctl.openvex.json": 1,
    "vexctl/pkg/ctl/testdata/test.vex.json": 0,
    "vexctl/pkg/ctl/testdata/v001-1.vex.json": 1,
    "vexctl/pkg/ctl/testdata/v001-2.vex.json": 1,
    "vexctl/pkg/ctl/testdata/v020-1.vex.json": 1,
    "vexctl/pkg/ctl/testdata/v020-2.vex.json": 1,
}
NGINX = "pkg:oci/nginx@sha256%3A13d22ec63300e16014d4a42aed735207a8b33c223cff19627dd3042e5a10a3a0"


def test_every_corpus_openvex_document_reads(corpus: Path) -> None:
    """Every OpenVEX document of the corpus reads; the vexctl files give the claims counted by hand.

    The corpus grows, so the folder is listed, not pinned: every ``*.json`` that is an OpenVEX document
    reads without rejection, and the only other JSON files are VEX Repository ``manifest.json`` files.
    """
    root = corpus / "openvex"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))
    assert set(EXPECTED_OPENVEX) <= set(files)
    counts: dict[str, int] = {}
    for rel in files:
        if rel.endswith("/manifest.json") and b"@context" not in (root / rel).read_bytes():
            continue  # a VEX Repository's per-package manifest, not a VEX document
        counts[rel] = len(read_file(root / rel).items)
    assert {rel: counts[rel] for rel in EXPECTED_OPENVEX} == EXPECTED_OPENVEX
    assert sum(counts[rel] for rel in EXPECTED_OPENVEX) == 19
    assert all(n > 0 for rel, n in counts.items() if rel not in EXPECTED_OPENVEX), "a new document read no claim"


def test_v020_claim_with_justification_and_aliases(corpus: Path) -> None:
    (c,) = read_file(corpus / "openvex/vexctl/examples/sarif/sample-1statement.openvex.json").items
    assert (c.vulnerability_id, c.product_key, c.status) == ("CVE-2023-27103", NGINX, "not_affected")
    assert c.justification == "component_not_present"
    assert c.aliases == ("SNYK-DEBIAN12-LIBDE265-3361563",)
    assert c.issued_at == "2023-08-17T01:55:22.076684Z"  # document time, -06:00 normalised to UTC
    assert c.detail == "This is a sample OpenVEX file, it is not a real security assessment."
    assert c.counts


def test_statement_time_overrides_document_time(corpus: Path) -> None:
    claims = read_file(corpus / "openvex/vexctl/examples/sarif/sample-2vulns.openvex.json").items
    by_vuln = {c.vulnerability_id: c for c in claims}
    assert by_vuln["CVE-2023-27103"].issued_at == "2023-08-16T01:55:22.076684Z"  # statement timestamp
    assert by_vuln["CVE-2007-5686"].issued_at == "2023-08-17T01:55:22.076684Z"  # document timestamp
    assert by_vuln["CVE-2007-5686"].status == "fixed"


def test_v001_string_vulnerability_and_products(corpus: Path) -> None:
    (c,) = read_file(corpus / "openvex/vexctl/pkg/ctl/testdata/v001-2.vex.json").items
    assert (c.vulnerability_id, c.product_key, c.status) == ("CVE-1234-5678", "pkg:apk/wolfi/bash@1.0.0", "fixed")
    assert c.issued_at == "2022-12-23T01:56:05Z"
    result = read_file(corpus / "openvex/vexctl/pkg/ctl/testdata/test.vex.json")
    assert result.items == []
    assert len(result.warnings) == 2 and "/statements/0" in result.warnings[0]


def test_demo_two_products_one_statement(corpus: Path) -> None:
    claims = read_file(corpus / "openvex/vexctl/examples/openvex/demo.vex.json").items
    assert sorted(c.product_key for c in claims) == [
        "pkg:apk/distro/git@2.39.0-r1?arch=armv7",
        "pkg:apk/distro/git@2.39.0-r1?arch=x86_64",
    ]
    assert {c.status for c in claims} == {"fixed"}


def _doc(statements: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.test/vex/1",
        "author": "t",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": statements,
        **extra,
    }


def test_subcomponents_and_identifiers() -> None:
    doc = _doc(
        [
            {
                "vulnerability": {"@id": "https://nvd.example/CVE-2024-1", "name": "CVE-2024-1"},
                "products": [
                    {
                        "@id": "https://example.test/products/app",
                        "identifiers": {"purl": "pkg:oci/app@sha256%3Aabc"},
                        "subcomponents": [{"identifiers": {"purl": "pkg:pypi/lib@1.0"}}, {"@id": "pkg:npm/x@2"}],
                    },
                    {"identifiers": {"cpe23": "cpe:2.3:a:acme:thing:1.0:*:*:*:*:*:*:*"}},
                ],
                "status": "affected",
                "action_statement": "upgrade",
                "timestamp": "2024-02-01T10:00:00+02:00",
            }
        ]
    )
    claims = read_doc(doc).items
    # One claim per product: the subcomponents are context of the product, never products themselves.
    keys = [(c.product_key, (c.context or {}).get("subcomponents")) for c in claims]
    assert keys == [
        ("pkg:oci/app@sha256%3Aabc", ["pkg:pypi/lib@1.0", "pkg:npm/x@2"]),
        ("cpe:2.3:a:acme:thing:1.0:*:*:*:*:*:*:*", None),
    ]
    assert {c.issued_at for c in claims} == {"2024-02-01T08:00:00Z"}
    assert {c.detail for c in claims} == {"upgrade"}


@pytest.mark.parametrize(
    ("statement", "pointer"),
    [
        ({"vulnerability": {"name": "CVE-1"}, "status": "broken", "products": ["pkg:x/y"]}, "/statements/0/status"),
        ({"status": "fixed", "products": ["pkg:x/y"]}, "/statements/0/vulnerability"),
        (
            {"vulnerability": {"name": "CVE-1"}, "status": "fixed", "products": [{"hashes": {}}]},
            "/statements/0/products/0",
        ),
        (
            {
                "vulnerability": {"name": "CVE-1"},
                "status": "not_affected",
                "justification": "because",
                "products": ["a"],
            },
            "/statements/0/justification",
        ),
        ({"vulnerability": {"name": "CVE-1"}, "status": "fixed", "products": "pkg:x/y"}, "/statements/0/products"),
    ],
)
def test_malformed_statement_names_file_and_pointer(statement: dict[str, object], pointer: str) -> None:
    with pytest.raises(MalformedDocumentError) as info:
        read_doc(_doc([statement]), name="vendor/bad.json")
    assert info.value.path == "vendor/bad.json"
    assert info.value.pointer == pointer
    assert str(info.value).startswith(f"vendor/bad.json#{pointer}: ")


def test_not_json_names_the_file() -> None:
    from stella_mirror.excititor.sources import ReadContext, read_bytes

    with pytest.raises(MalformedDocumentError) as info:
        read_bytes(b'{"@context": ', ReadContext("x/broken.json", "p", "sha256:" + "0" * 64))
    assert info.value.path == "x/broken.json" and info.value.pointer == ""


def test_impact_statement_alone_justifies_not_affected() -> None:
    """OpenVEX: not_affected needs a justification *or* an impact statement; either makes it count."""
    base = {"vulnerability": {"name": "CVE-2024-2"}, "products": ["pkg:pypi/a@1"], "status": "not_affected"}
    (impact,) = read_doc(_doc([{**base, "impact_statement": "  The parser is never built.  "}])).items
    assert (impact.justification, impact.impact_statement, impact.counts) == (None, "The parser is never built.", True)
    (bare,) = read_doc(_doc([base])).items
    assert (bare.impact_statement, bare.counts) == (None, False)


def test_vexhub_subcomponents_never_become_products(corpus: Path) -> None:
    """vexhub-aqua (Rancher, Harvester…): a statement about P with subcomponents S yields exactly one
    claim per (statement, product), about P, with S as context; no claim names a subcomponent."""
    root = corpus / "openvex/vexhub-aqua"
    files = [p for p in sorted(root.rglob("*.json")) if p.name != "manifest.json"]
    with_subs = 0
    for path in files:
        doc = orjson.loads(path.read_bytes())
        expected: list[tuple[str, str, tuple[str, ...]]] = []
        sub_ids: set[str] = set()
        for st in doc["statements"]:
            for prod in st.get("products", []):
                subs = tuple(dict.fromkeys(s["@id"] for s in prod.get("subcomponents", [])))
                sub_ids.update(subs)
                expected.append((st["vulnerability"]["name"], prod["@id"], subs))
        claims = read_file(path).items
        got = [(c.vulnerability_id, c.product_key, tuple((c.context or {}).get("subcomponents", ()))) for c in claims]
        assert got == expected, path  # not doubled: one claim per statement x product
        product_ids = {prod for _v, prod, _s in expected}
        assert not {c.product_key for c in claims} & (sub_ids - product_ids), path
        with_subs += bool(sub_ids)
    assert with_subs > 0  # the folder does hold documents with subcomponents
