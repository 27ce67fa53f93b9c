"""The OSV fast path (typed msgspec decode → canonical bytes) against the exact reader.

The fast path may only *accept* documents the exact reader maps to the same record; everything else
(malformed or merely unusual) must be declined so that the exact reader produces the record or the
error. These tests compare both on real and constructed documents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from jsonedit import DELETE, edited
from stella_mirror.concelier.model import Doc, lowest_cve
from stella_mirror.concelier.sources import canonical_record, osv
from stella_mirror.concelier.sources.osv_fast import fast_entry
from stella_mirror.errors import MalformedDocumentError

BASE: dict[str, Any] = {
    "schema_version": "1.6.0",
    "id": "GHSA-xxxx-yyyy-zzzz",
    "modified": "2024-01-02T00:00:00Z",
    "published": "2023-12-30T10:11:12.123456Z",
    "aliases": [" CVE-2024-10001 ", "CVE-2024-9999", "PYSEC-1", ""],
    "summary": "a summary",
    "details": "details ü \u2028 \x01",
    "severity": [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
        {"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"},
        {"type": "CVSS_V3", "score": "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:C/C:L/I:L/A:N"},
        {"type": "Ubuntu", "score": "medium"},
    ],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "Demo_Pkg"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}]},
                {"type": "ECOSYSTEM", "events": [{"fixed": "1.0"}, {"limit": "9"}]},
                {"type": "SEMVER", "events": [{"introduced": "0"}, {"last_affected": "0.5.0"}]},
            ],
            "versions": ["0.1", "0.2", "0.1"],
            "ecosystem_specific": {"imports": [{"path": "x"}]},
            "database_specific": {"source": "https://example.org"},
        },
        {
            "package": {"ecosystem": "Go", "name": "example.org/mod", "purl": "pkg:golang/example.org/mod@v1?x=1"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}]}],
        },
        {"package": {"ecosystem": "Alpine:v3.18", "name": "a"}, "versions": []},
    ],
    "references": [
        {"type": "WEB", "url": "https://b.example"},
        {"type": "ADVISORY", "url": "https://a.example"},
        {"type": "", "url": "https://a.example"},
    ],
    "credits": [{"name": "someone"}],
    "database_specific": {"severity": "MODERATE", "cwe_ids": ["CWE-79", "CWE-20", "CWE-79", 3]},
}


def _exact(path: str, data: bytes) -> tuple[str, bytes | None, dict[str, Any] | None]:
    """The general path: ``("ok", canonical bytes, record)`` or ``("rejected", None, None)``."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        rec = canonical_record(osv.to_record(Doc(path), osv.load(path, data), "src", digest))
    except (MalformedDocumentError, RecursionError):
        return ("rejected", None, None)
    return ("ok", orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), dict(rec))


def _check(data: bytes, path: str = "osv/x.json") -> bool:
    """Assert the fast path agrees with the general one; True when it took the document."""
    status, blob, rec = _exact(path, data)
    entry = fast_entry(data, "src", "sha256:" + hashlib.sha256(data).hexdigest())
    if entry is None:
        return False
    assert status == "ok", "the fast path accepted a document the exact reader rejects"
    assert rec is not None
    assert entry.blob == blob
    assert entry.key == rec["advisoryKey"]
    assert entry.aliases == rec["aliases"]
    assert entry.cve == lowest_cve(rec["aliases"])
    assert entry.recorded_at == rec["provenance"][0]["recordedAt"]
    return True


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    return edited(BASE, path, value)




def test_a_full_document_takes_the_fast_path_with_the_same_bytes() -> None:
    assert _check(orjson.dumps(BASE))
    assert _check(orjson.dumps(BASE, option=orjson.OPT_INDENT_2))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["aliases"], DELETE),
        (["aliases"], None),
        (["aliases"], ["GHSA-xxxx-yyyy-zzzz"]),
        (["severity"], []),
        (["severity"], DELETE),
        (["database_specific"], DELETE),
        (["database_specific", "severity"], "bogus"),
        (["database_specific", "severity"], 7),
        (["database_specific", "cwe_ids"], "CWE-1"),
        (["summary"], ""),
        (["details"], None),
        (["published"], "0001-01-01T00:00:00Z"),
        (["withdrawn"], "2024-02-02T00:00:00Z"),
        (["references"], []),
        (["affected"], []),
        (["affected", 0, "ranges"], None),
        (["affected", 0, "versions"], None),
        (["affected", 1, "package", "purl"], "not-a-purl"),
        (["affected", 1, "package", "purl"], ""),
        (["affected", 0, "package", "ecosystem"], "crates.io"),
        (["affected", 0, "ranges", 0, "events"], []),
        (["related"], ["CVE-1"]),
        (["upstream"], ["CVE-2"]),
        (["severity", 0, "score"], " CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N "),
        (["severity"], [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N"}]),
        # Shapes the fast path declines but the exact reader accepts (or rejects): either way, no difference.
        (["modified"], "2024-01-02"),
        (["modified"], "2024-01-02T00:00:00.1Z"),
        (["modified"], None),
        (["affected", 0, "package"], DELETE),
        (["affected", 1, "package"], {"ecosystem": "PyPI", "name": "demo-pkg"}),
        (["affected", 0, "ranges", 0, "events", 0], {"introduced": "0", "note": "x"}),
        (["unknown_field"], {"deep": [1, 2]}),
        (["affected", 0, "package", "extra"], 1),
        (["id"], "  "),
        (["id"], " padded "),
        (["references", 0, "url"], ""),
        (["references", 0, "url"], "  "),
        # Malformed: the exact reader rejects, so the fast path must decline.
        (["id"], DELETE),
        (["id"], 42),
        (["aliases"], "CVE-1"),
        (["aliases", 1], None),
        (["modified"], DELETE),
        (["modified"], "yesterday"),
        (["affected", 0, "ranges", 1, "type"], "FOO"),
        (["affected", 0, "ranges", 0, "events", 1], {"fixed": "1", "introduced": "0"}),
        (["affected", 0, "ranges", 0, "events", 1], {"fixed": 1}),
        (["affected", 0, "ranges", 0, "events"], DELETE),
        (["affected", 0, "package", "name"], ["x"]),
        (["affected", 0, "package", "name"], " "),
        (["severity", 0, "score"], "CVSS:3.1/AV:N"),
        (["severity", 0, "score"], ""),
        (["severity", 0], "CVSS:3.1"),
        (["references", 0], {"url": "https://x.example"}),
        (["database_specific"], []),
        (["summary"], 5),
    ],
)
def test_variants_agree_with_the_exact_reader(path: list[Any], value: Any) -> None:
    _check(orjson.dumps(_with(path, value)))


@pytest.mark.parametrize(
    "data",
    [
        # What msgspec would let through in a value it skips; orjson rejects these documents.
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "x": "\xff"}',
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "x": 1e400}',
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "credits": [1e400]}',
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "credits": "\xed\xa0\x80"}',
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "credits": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z"} trailing',
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "summary": "\\ud800"}',
        b"\xef\xbb\xbf" + b'{"id": "X", "modified": "2024-01-01T00:00:00Z"}',
        b"[1, 2]",
    ],
)
def test_bytes_orjson_refuses_are_declined(data: bytes) -> None:
    assert _exact("osv/x.json", data)[0] == "rejected"
    assert fast_entry(data, "src", "sha256:" + "0" * 64) is None


def test_duplicate_keys_last_wins_in_both() -> None:
    assert _check(b'{"id": "X", "id": "Y", "modified": "2024-01-01T00:00:00Z", "summary": "a", "summary": "s"}')
    # msgspec checks each occurrence, orjson only keeps the last: declined, and the exact reader decides.
    assert not _check(b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "summary": 1, "summary": "s"}')


def test_msgspec_writes_strings_and_scores_as_orjson_does() -> None:
    """The canonical bytes depend on it: every code point, and every possible CVSS base score."""
    encode = msgspec.json.Encoder().encode
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert encode(text) == orjson.dumps(text)
    for c in range(0x80):
        assert encode(chr(c)) == orjson.dumps(chr(c))
    scores = [i / 10 for i in range(101)] + [round(i * 0.1, 1) for i in range(101)]
    assert encode(scores) == orjson.dumps(scores)


def test_corpus_documents_agree(corpus: Path) -> None:
    """Every golang JSON document of the shared corpus: the same bytes, and nearly all take the fast path."""
    taken = total = 0
    for path in sorted((corpus / "osv").rglob("*.json")):
        total += 1
        taken += _check(path.read_bytes(), str(path))
    assert total == 4291
    assert taken >= 0.99 * total
