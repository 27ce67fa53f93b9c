"""CSAF documents → one record per vulnerability; product resolution; non-CSAF files are skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stella_mirror.concelier import merge
from stella_mirror.concelier.model import interval_range
from stella_mirror.concelier.sources import ReadTask, csaf, read_document
from stella_mirror.errors import MalformedDocumentError

SAMPLES = Path(__file__).resolve().parents[3] / "src" / "stella_mirror" / "samples" / "concelier" / "csaf"


def records(path: Path) -> list[Any]:
    """Records as the exporter stores them (finalised by ``merge.merge`` of a single record)."""
    out = csaf.parse(str(path), path.read_bytes(), "csaf", "sha256:" + "0" * 64)
    assert out is not None
    return [merge.merge(r["advisoryKey"], [r]) for r in out]


def test_sample_advisory_resolves_purl_cpe_ranges_and_relationships() -> None:
    gofiles, gateway = records(SAMPLES / "exmpl-sa-2099-001.json")
    assert gofiles["advisoryKey"] == "CVE-2099-10002"
    assert gofiles["title"] == "gofiles archive path traversal"
    assert gofiles["summary"].startswith("Example Corp gateway firmware")  # document-level summary note
    assert gofiles["description"].startswith("The bundled gofiles library")
    assert gofiles["published"] == "2099-03-02T09:00:00Z"  # initial_release_date
    assert gofiles["modified"] == "2099-03-09T09:00:00Z"
    # The relationship product "CONSOLE-7.1:GOFILES-1.5.2" stands for its gofiles component (purl).
    assert gofiles["affected"] == [
        {
            "ecosystem": "Go",
            "package": "example.com/gofiles",
            "purl": "pkg:golang/example.com/gofiles",
            "ranges": [interval_range("ECOSYSTEM", {"introduced": None, "fixed": "1.5.3", "lastAffected": None})],
            "versions": ["1.5.2"],
            "severity": [],
            "ecosystemSpecific": [],
            "databaseSpecific": [],
        }
    ]
    assert gofiles["cwes"] == ["CWE-22"]
    assert {"url": "https://psirt.example.com/fixes/gofiles-1.5.3", "type": "FIX"} in gofiles["references"]
    assert {"url": "https://psirt.example.com/advisories/EXMPL-SA-2099-001.json", "type": "ADVISORY"} in gofiles[
        "references"
    ]
    assert gofiles["provenance"][0]["documentId"] == "EXMPL-SA-2099-001"
    # CPE product with a vers: range; the missing base score is computed from the vector.
    assert gateway["affected"] == [
        {
            "ecosystem": "CPE",
            "package": "cpe:2.3:o:example:gateway_gx_firmware",
            "purl": None,
            "ranges": [
                # The bare "fixed in 4.2" of product GX-FW-4.2 is implied by this range and dropped.
                interval_range("VENDOR", {"introduced": "3.0", "fixed": "4.2", "lastAffected": None}),
            ],
            "versions": [],
            "severity": [],
            "ecosystemSpecific": [],
            "databaseSpecific": [],
        }
    ]
    assert gateway["cvss"][0]["baseScore"] == 9.8
    assert gateway["severity"] == "critical"
    assert gateway["published"] == "2099-03-02T09:00:00Z"  # vulnerability release_date


def test_vex_known_not_affected_adds_nothing() -> None:
    [rec] = records(SAMPLES / "exmpl-vex-2099-002.json")
    assert [(a["ecosystem"], a["package"]) for a in rec["affected"]] == [("PyPI", "tinyhttpd")]
    assert rec["severity"] == "high"  # threat impact "Important"


@pytest.mark.parametrize(
    ("text", "ranges", "versions"),
    [
        ("vers:all/*", [(None, None, None)], []),
        ("<V3.1.4", [(None, "V3.1.4", None)], []),
        ("<=2.0.0.3", [(None, None, "2.0.0.3")], []),
        ("vers:generic/>=1.0|<2.0|>=3.0", [("1.0", "2.0", None), ("3.0", None, None)], []),
        ("vers:semver/1.2.3|1.2.4", [], ["1.2.3", "1.2.4"]),
    ],
)
def test_version_ranges(text: str, ranges: list[tuple[str | None, ...]], versions: list[str]) -> None:
    got_ranges, got_versions = csaf.parse_vers(text, "VENDOR")
    assert [(iv["introduced"], iv["fixed"], iv["lastAffected"]) for r in got_ranges for iv in r["intervals"] or ()] == (
        ranges
    )
    assert got_versions == versions


def test_bsi_example_resolves_cpe_products(corpus: Path) -> None:
    [rec] = records(corpus / "csaf" / "oasis-tcs" / "csaf_2.0" / "examples" / "csaf" / "bsi-2022-0001.json")
    assert rec["provenance"][0]["documentId"] == "BSI-2022-0001"
    [aff] = rec["affected"]
    assert (aff["ecosystem"], aff["package"], aff["purl"]) == ("CPE", "cpe:/a:csaf-tools:cvrf-csaf-converter", None)
    assert aff["versions"] == ["1.0.0-alpha", "1.0.0-dev1", "1.0.0-dev2", "1.0.0-dev3", "1.0.0-rc1"]
    assert aff["ranges"] == [interval_range("VENDOR", {"introduced": None, "fixed": "1.0.0-rc2", "lastAffected": None})]


def test_cisa_advisory_uses_vendor_branches(corpus: Path) -> None:
    recs = records(corpus / "csaf" / "cisagov" / "OT" / "white" / "2024" / "icsa-24-046-11.json")
    by_key = {r["advisoryKey"]: r for r in recs}
    rec = by_key["CVE-2023-29409"]
    assert rec["provenance"][0]["documentId"] == "ICSA-24-046-11"
    assert all(a["ecosystem"] == "Siemens" for a in rec["affected"])
    assert rec["cvss"] and rec["cvss"][0]["version"] == "3.1"


@pytest.mark.parametrize(
    "rel",
    [
        "oasis-tcs/csaf_2.0/examples/ROLIE/example-01-feed-tlp-white.json",
        "oasis-tcs/csaf_2.0/examples/provider-metadata/example-01-provider-metadata.json",
        "oasis-tcs/csaf_2.0/examples/aggregator/example-01-aggregator.json",
        "cisagov/IT/white/cisa-csaf-it-feed-tlp-white.json",
        "cisagov/IT/white/changes.csv",
        "cisagov/IT/white/2024/va-24-201-01.json.asc",
        "cisagov/IT/white/2024/va-24-201-01.json.sha512",
    ],
)
def test_non_csaf_files_are_skipped(corpus: Path, rel: str) -> None:
    status, _path, _reason = read_document(ReadTask(str(corpus / "csaf" / rel), "csaf", "csaf", 0, 1 << 25))
    assert status == "skipped"


def _doc(**vuln: Any) -> bytes:
    doc = orjson.loads((SAMPLES / "exmpl-vex-2099-002.json").read_bytes())
    doc["vulnerabilities"][0].update(vuln)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("data", "pointer"),
    [
        (_doc(product_status={"known_affected": "TINY-2.4.0"}), "/vulnerabilities/0/product_status/known_affected"),
        (
            _doc(scores=[{"cvss_v3": {"vectorString": "CVSS:3.1/AV:Q", "version": "3.1"}}]),
            "/vulnerabilities/0/scores/0/cvss_v3/vectorString",
        ),
        (_doc(cve=7), "/vulnerabilities/0/cve"),
        (
            orjson.dumps({"document": {"csaf_version": "2.0", "tracking": {"id": "X"}}}),
            "/document/tracking/current_release_date",
        ),
    ],
)
def test_malformed_csaf(data: bytes, pointer: str) -> None:
    with pytest.raises(MalformedDocumentError) as err:
        csaf.parse("csaf/x.json", data, "csaf", "sha256:" + "0" * 64)
    assert (err.value.path, err.value.pointer) == ("csaf/x.json", pointer)
