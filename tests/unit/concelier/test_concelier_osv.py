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

V3 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
V4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
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
            "osv": orjson.loads(data),  # the source document itself: nothing of it is lost
        }
    ]


def _range(rtype: str, events: list[dict[str, str]], intervals: Any, repo: str | None = None) -> dict[str, Any]:
    return {
        "type": rtype,
        "repo": repo,
        "events": events,
        "vers": None,
        "text": None,
        "intervals": intervals,
        "databaseSpecific": None,
    }


def _iv(introduced: str | None, fixed: str | None = None, last: str | None = None) -> dict[str, str | None]:
    return {"introduced": introduced, "fixed": fixed, "lastAffected": last}


def test_lowest_cve_is_the_key_and_ranges_keep_their_events() -> None:
    rec = parse(BASE)
    assert rec["advisoryKey"] == "CVE-2024-0001"
    assert rec["affected"][0]["ranges"] == [
        _range("ECOSYSTEM", [{"introduced": "0"}, {"fixed": "1.0"}], [_iv(None, "1.0")]),
        _range("SEMVER", [{"introduced": "2.0.0"}], [_iv("2.0.0")]),
    ]
    assert rec["affected"][0]["purl"] == "pkg:pypi/demo"  # derived when the document has none


@pytest.mark.parametrize(
    ("rtype", "ecosystem", "events", "intervals"),
    [
        # Two introduced before one fixed: one interval from the earlier introduced (OSV-2022-572's shape).
        (
            "SEMVER",
            "Go",
            [{"introduced": "1.0.0"}, {"introduced": "1.2.0"}, {"fixed": "1.5.0"}],
            [_iv("1.0.0", "1.5.0")],
        ),
        # introduced 0 then two fixed: affected below the lower fixed only (CVE-2021-43818's shape).
        ("ECOSYSTEM", "PyPI", [{"introduced": "0"}, {"fixed": "4.6.5"}, {"fixed": "4.7"}], [_iv(None, "4.6.5")]),
        # Events out of order are sorted by the ecosystem's order, not paired in list order.
        (
            "ECOSYSTEM",
            "PyPI",
            [{"introduced": "2.0"}, {"fixed": "2.1"}, {"introduced": "1.0"}, {"fixed": "1.1"}],
            [_iv("1.0", "1.1"), _iv("2.0", "2.1")],
        ),
        # PEP 440: 1.0rc1 comes before 1.0, so the fixed 1.0 closes the range opened at 1.0rc1.
        ("ECOSYSTEM", "PyPI", [{"fixed": "1.0"}, {"introduced": "1.0rc1"}], [_iv("1.0rc1", "1.0")]),
        # SemVer, not text order: 1.10.0 > 1.9.0.
        ("SEMVER", "npm", [{"introduced": "1.10.0"}, {"last_affected": "1.9.0"}], [_iv("1.10.0")]),
        ("SEMVER", "npm", [{"introduced": "1.9.0"}, {"last_affected": "1.10.0"}], [_iv("1.9.0", None, "1.10.0")]),
        # A fixed before anything was introduced changes nothing.
        ("ECOSYSTEM", "Maven", [{"fixed": "1.0"}, {"introduced": "2.0"}], [_iv("2.0")]),
        # No known order: the events stand alone.
        ("ECOSYSTEM", "OSS-Fuzz", [{"introduced": "1"}, {"fixed": "2"}], None),
        ("ECOSYSTEM", "PyPI", [{"introduced": "0"}, {"fixed": "not a version!"}], None),
        ("SEMVER", "Go", [{"introduced": "1.0.0"}, {"limit": "2.0.0"}], None),
    ],
)
def test_intervals_follow_the_osv_evaluation_algorithm(
    rtype: str, ecosystem: str, events: list[dict[str, str]], intervals: Any
) -> None:
    doc = edited(BASE, ["affected", 0], {"package": {"ecosystem": ecosystem, "name": "p"}, "ranges": []})
    doc["affected"][0]["ranges"] = [{"type": rtype, "events": events}]
    [rng] = parse(doc)["affected"][0]["ranges"]
    assert rng["events"] == events  # verbatim, in source order
    assert rng["intervals"] == intervals


def test_per_package_severity_scores_and_rates_the_advisory() -> None:
    """Bitnami states its CVSS only per package; a v4-only or v2-only vector still gives a severity."""
    bitnami = edited(BASE, ["affected", 0, "severity"], [{"type": "CVSS_V3", "score": V3}])
    rec = parse(bitnami)
    assert rec["cvss"] == [{"version": "3.1", "vector": V3, "baseScore": 9.8}]
    assert rec["severity"] == "critical"
    assert rec["affected"][0]["severity"] == [{"type": "CVSS_V3", "score": V3}]
    v4 = parse(edited(BASE, ["severity"], [{"type": "CVSS_V4", "score": V4}]))
    assert v4["cvss"] == [{"version": "4.0", "vector": V4, "baseScore": 9.3}]
    assert v4["severity"] == "critical"
    v2 = parse(edited(BASE, ["severity"], [{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:N/A:N"}]))
    assert v2["cvss"][0]["baseScore"] == 5.0 and v2["severity"] == "medium"
    # A severity word the database states wins over the scores (documented precedence).
    stated = parse(edited(bitnami, ["database_specific"], {"severity": "Medium"}))
    assert stated["severity"] == "medium" and stated["cvss"][0]["baseScore"] == 9.8
    # Other severity types (Ubuntu's words) stay verbatim on the package and add no CVSS.
    ubuntu = parse(edited(BASE, ["affected", 0, "severity"], [{"type": "Ubuntu", "score": "high"}]))
    assert ubuntu["cvss"] == [] and ubuntu["affected"][0]["severity"] == [{"type": "Ubuntu", "score": "high"}]


def test_specific_fields_related_and_git_repos_are_kept() -> None:
    doc = edited(BASE, ["affected", 0, "ecosystem_specific"], {"imports": [{"path": "x", "symbols": ["F"]}]})
    doc["affected"][0]["database_specific"] = {"source": "https://example.org"}
    doc["affected"][0]["ranges"].append(
        {
            "type": "GIT",
            "repo": "https://github.com/o/r",
            "events": [{"introduced": "0"}, {"fixed": "abc"}],
            "database_specific": {"note": 1},
        }
    )
    doc["related"] = ["GHSA-xxxx", "CGA-1"]
    doc["credits"] = [{"name": "someone", "type": "FINDER"}]
    rec = parse(doc)
    aff = rec["affected"][0]
    assert aff["ecosystemSpecific"] == [{"imports": [{"path": "x", "symbols": ["F"]}]}]
    assert aff["databaseSpecific"] == [{"source": "https://example.org"}]
    git = aff["ranges"][2]
    assert (git["type"], git["repo"], git["intervals"], git["databaseSpecific"]) == (
        "GIT",
        "https://github.com/o/r",
        None,
        {"note": 1},
    )
    assert git["events"] == [{"introduced": "0"}, {"fixed": "abc"}]
    assert rec["related"] == ["CGA-1", "GHSA-xxxx"]
    assert rec["provenance"][0]["osv"] == doc  # credits and everything else, verbatim


@pytest.mark.parametrize(
    ("ecosystem", "name", "purl"),
    [
        ("PyPI", "Foo_Bar", "pkg:pypi/foo-bar"),
        ("Maven", "org.apache.logging.log4j:log4j-core", "pkg:maven/org.apache.logging.log4j/log4j-core"),
        ("npm", "@babel/core", "pkg:npm/%40babel/core"),
        ("Go", "github.com/a/b", "pkg:golang/github.com/a/b"),
        ("AlmaLinux:8", "openssl", "pkg:rpm/almalinux/openssl"),
        ("Debian:12", "curl", "pkg:deb/debian/curl"),
        ("Packagist", "laravel/framework", "pkg:composer/laravel/framework"),
        ("Bitnami", "minio", "pkg:bitnami/minio"),
        ("OSS-Fuzz", "dnsmasq", None),
    ],
)
def test_purls_are_derived_per_the_purl_spec(ecosystem: str, name: str, purl: str | None) -> None:
    doc = edited(BASE, ["affected", 0, "package"], {"ecosystem": ecosystem, "name": name})
    assert parse(doc)["affected"][0]["purl"] == purl


def test_yaml_unquoted_timestamps_give_the_same_record_as_quoted() -> None:
    body = "id: T-2\naliases: [CVE-2030-1]\nsummary: s\n"
    unquoted = ("modified: 2021-07-05T00:01:22.415943Z\npublished: 2014-05-14T19:55:00Z\n" + body).encode()
    quoted = ('modified: "2021-07-05T00:01:22.415943Z"\npublished: "2014-05-14T19:55:00Z"\n' + body).encode()
    a = osv.parse("u.yaml", unquoted, "osv", "sha256:" + "0" * 64)[0]
    b = osv.parse("q.yaml", quoted, "osv", "sha256:" + "0" * 64)[0]
    assert a == b
    assert a["modified"] == "2021-07-05T00:01:22.415943Z"
    assert a["published"] == "2014-05-14T19:55:00Z"


def test_go_zero_time_means_unknown_and_git_events_are_kept_with_their_repo() -> None:
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
            "ranges": [_range("GIT", [{"introduced": "a"}, {"limit": "b"}], None, "https://example.org/r")],
            "versions": [],
            "severity": [],
            "ecosystemSpecific": [],
            "databaseSpecific": [],
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
        (
            ["severity"],
            [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N"}],
            "/severity/0/score",
            "invalid CVSS v3.1 vector",
        ),
        (["severity"], [{"type": "CVSS_V4", "score": V3}], "/severity/0/score", "not a CVSS_V4 vector"),
        (["affected", 0, "severity"], {"type": "CVSS_V3"}, "/affected/0/severity", "expected an array, got object"),
        (["affected", 0, "ecosystem_specific"], [1], "/affected/0/ecosystem_specific", "expected an object"),
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
    assert aff["ranges"] == [_range("ECOSYSTEM", [{"introduced": "0"}, {"fixed": "3.3.5"}], [_iv(None, "3.3.5")])]
    assert aff["versions"][:3] == ["0.9", "0.9.1", "0.9.2"]  # quoted "0.9" and unquoted 0.9.1 both strings
