"""OSV documents → canonical source records, and malformed OSV → errors that name file and field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from jsonedit import DELETE, edited
from stella_mirror.concelier.sources import osv
from stella_mirror.errors import MalformedDocumentError

SAMPLES = Path(__file__).resolve().parents[3] / "src" / "stella_mirror" / "samples" / "concelier" / "osv"

BASE: dict[str, Any] = {
    "id": "TEST-1",
    "modified": "2024-01-02T00:00:00Z",
    "aliases": ["CVE-2024-0002", "CVE-2024-0001"],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "demo"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}]},
                {"type": "SEMVER", "events": [{"introduced": "2.0.0"}]},
            ],
        }
    ],
}


def parse(doc: Any, name: str = "osv/x.json") -> dict[str, Any]:
    data = orjson.dumps(doc)
    return dict(osv.parse(name, data, "osv", "sha256:" + hashlib.sha256(data).hexdigest())[0])


def test_sample_with_cvss_and_database_severity() -> None:
    path = SAMPLES / "SMPL-2099-0001.json"
    data = path.read_bytes()
    [rec] = osv.parse(str(path), data, "osv", "sha256:" + hashlib.sha256(data).hexdigest())
    assert rec["advisoryKey"] == "CVE-2099-10001"
    assert rec["aliases"] == ["CVE-2099-10001", "GHSA-aaaa-bbbb-cccc", "SMPL-2099-0001"]
    assert rec["severity"] == "high"  # database_specific.severity HIGH
    assert rec["cvss"] == [
        {"version": "3.1", "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N", "baseScore": 9.1}
    ]
    assert rec["cwes"] == ["CWE-444"]
    assert rec["affected"][0]["purl"] == "pkg:pypi/tinyhttpd"
    assert rec["provenance"] == [
        {
            "source": "osv",
            "documentId": "SMPL-2099-0001",
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "recordedAt": "2099-02-03T10:00:00Z",
        }
    ]


def test_lowest_cve_is_the_key_and_ranges_pair_events() -> None:
    rec = parse(BASE)
    assert rec["advisoryKey"] == "CVE-2024-0001"
    assert rec["affected"][0]["ranges"] == [
        {"type": "ECOSYSTEM", "introduced": "0", "fixed": "1.0", "lastAffected": None},
        {"type": "SEMVER", "introduced": "2.0.0", "fixed": None, "lastAffected": None},
    ]
    assert rec["affected"][0]["purl"] == "pkg:pypi/demo"  # derived when the document has none


def test_yaml_unquoted_timestamps_give_the_same_record_as_quoted() -> None:
    body = "id: T-2\naliases: [CVE-2030-1]\nsummary: s\n"
    unquoted = ("modified: 2021-07-05T00:01:22.415943Z\npublished: 2014-05-14T19:55:00Z\n" + body).encode()
    quoted = ('modified: "2021-07-05T00:01:22.415943Z"\npublished: "2014-05-14T19:55:00Z"\n' + body).encode()
    a = osv.parse("u.yaml", unquoted, "osv", "sha256:" + "0" * 64)[0]
    b = osv.parse("q.yaml", quoted, "osv", "sha256:" + "0" * 64)[0]
    assert a == b
    assert a["modified"] == "2021-07-05T00:01:22.415943Z"
    assert a["published"] == "2014-05-14T19:55:00Z"


def test_go_zero_time_means_unknown_and_limit_events_are_dropped() -> None:
    doc = {
        "id": "GO-1",
        "modified": "0001-01-01T00:00:00Z",
        "affected": [
            {
                "ranges": [
                    {"type": "GIT", "repo": "https://example.org/r", "events": [{"introduced": "a"}, {"limit": "b"}]}
                ]
            }
        ],
    }
    rec = parse(doc)
    assert rec["modified"] is None and rec["provenance"][0]["recordedAt"] is None
    assert rec["affected"] == [
        {
            "ecosystem": "GIT",
            "package": "https://example.org/r",
            "purl": None,
            "ranges": [{"type": "GIT", "introduced": "a", "fixed": None, "lastAffected": None}],
            "versions": [],
        }
    ]


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    return edited(BASE, path, value)




@pytest.mark.parametrize(
    ("path", "value", "pointer", "reason"),
    [
        (["affected", 0, "ranges", 1, "type"], "FOO", "/affected/0/ranges/1/type", "unknown range type 'FOO'"),
        (["id"], DELETE, "/id", "required field is missing"),
        (["id"], 42, "/id", "expected a string, got number"),
        (["aliases"], "CVE-1", "/aliases", "expected an array, got string"),
        (["aliases", 1], None, "/aliases/1", "expected a string, got null"),
        (["affected", 0, "package", "name"], ["x"], "/affected/0/package/name", "expected a string, got array"),
        (
            ["affected", 0, "ranges", 0, "events", 1],
            {"fixed": "1", "introduced": "0"},
            "/affected/0/ranges/0/events/1",
            "exactly one of",
        ),
        (["modified"], "yesterday", "/modified", "not an RFC 3339 timestamp"),
        (["modified"], DELETE, "/modified", "required field is missing"),
        (["severity"], [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N"}], "/severity/0/score", "missing base metric"),
    ],
)
def test_malformed_fields_name_file_and_pointer(path: list[Any], value: Any, pointer: str, reason: str) -> None:
    with pytest.raises(MalformedDocumentError) as err:
        parse(_with(path, value), "osv/x.json")
    assert err.value.path == "osv/x.json"
    assert err.value.pointer == pointer
    assert reason in err.value.reason
    assert str(err.value).startswith(f"osv/x.json#{pointer}: ")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "aff', "not valid JSON"),
        (b'{"id": "\xff"}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"[1, 2]", "expected an object, got array"),
    ],
)
def test_broken_documents(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedDocumentError, match=reason):
        osv.parse("osv/broken.json", data, "osv", "sha256:" + "0" * 64)


def test_every_corpus_document_parses(corpus: Path) -> None:
    """Real OSV data from every database of the corpus (YAML and JSON) reads without a single rejection."""
    databases: dict[str, int] = {}
    for path in sorted((corpus / "osv").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            [rec] = osv.parse(str(path), data, "osv", "sha256:" + hashlib.sha256(data).hexdigest())
            assert rec["aliases"] and rec["provenance"][0]["documentId"] in rec["aliases"]
            db = path.relative_to(corpus / "osv").parts[0]
            databases[db] = databases.get(db, 0) + 1
    # The folder grows: whatever it holds must read, and the databases named in SOURCES.md are there.
    assert {"pypa", "golang"} <= set(databases) and all(databases.values())


def test_pypa_yaml_matches_the_source_text(corpus: Path) -> None:
    path = corpus / "osv" / "pypa" / "lxml" / "PYSEC-2014-9.yaml"
    rec = osv.parse(str(path), path.read_bytes(), "osv", "sha256:" + "0" * 64)[0]
    assert rec["advisoryKey"] == "CVE-2014-3146"
    assert rec["published"] == "2014-05-14T19:55:00Z"
    assert rec["modified"] == "2021-07-05T00:01:22.415943Z"
    aff = rec["affected"][0]
    assert (aff["ecosystem"], aff["package"], aff["purl"]) == ("PyPI", "lxml", "pkg:pypi/lxml")
    assert aff["ranges"] == [{"type": "ECOSYSTEM", "introduced": "0", "fixed": "3.3.5", "lastAffected": None}]
    assert aff["versions"][:3] == ["0.9", "0.9.1", "0.9.2"]  # quoted "0.9" and unquoted 0.9.1 both strings
