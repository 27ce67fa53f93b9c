"""The OSV fast paths against the exact reader.

Two implementations: ``python_entry`` (typed msgspec decode → mapped structs → canonical bytes) and
``compiled_entry`` (orjson decode → ``_osvc.entry`` in C writes the canonical bytes). Each may only
*accept* documents the exact reader maps to the same record; everything else (malformed or merely
unusual) must be declined so that the exact reader produces the record or the error. These tests
compare both with the exact reader on real, constructed and randomly mutated documents.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from osv_documents import BASE, EDITS, ODD, leaf_paths

from jsonedit import DELETE, edited
from stella_mirror.concelier.model import Doc, lowest_cve
from stella_mirror.concelier.sources import canonical_record, osv, osv_fast
from stella_mirror.concelier.sources.osv_fast import Entry, compiled_entry, python_entry
from stella_mirror.errors import MalformedDocumentError


def _exact(path: str, data: bytes) -> tuple[str, bytes | None, dict[str, Any] | None]:
    """The general path: ``("ok", canonical bytes, record)`` or ``("rejected", None, None)``."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        rec = canonical_record(osv.to_record(Doc(path), osv.load(path, data), "src", digest))
    except (MalformedDocumentError, RecursionError):
        return ("rejected", None, None)
    return ("ok", orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), dict(rec))


Impl = Callable[[bytes, str, str], Entry | None]


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> Impl:
    return python_entry if request.param == "python" else compiled_entry


def test_the_compiled_module_is_built_and_used() -> None:
    """``pip install`` builds it (setup.py); an export would otherwise silently take the slower path."""
    assert osv_fast.COMPILED
    assert osv_fast.fast_entry(orjson.dumps(BASE), "src", "sha256:x") == compiled_entry(
        orjson.dumps(BASE), "src", "sha256:x"
    )


def _check(impl: Impl, data: bytes, path: str = "osv/x.json") -> bool:
    """Assert a fast path agrees with the general one; True when it took the document."""
    status, blob, rec = _exact(path, data)
    entry = impl(data, "src", "sha256:" + hashlib.sha256(data).hexdigest())
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




def test_a_full_document_takes_the_fast_path_with_the_same_bytes(impl: Impl) -> None:
    assert _check(impl, orjson.dumps(BASE))
    assert _check(impl, orjson.dumps(BASE, option=orjson.OPT_INDENT_2))


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
def test_variants_agree_with_the_exact_reader(impl: Impl, path: list[Any], value: Any) -> None:
    _check(impl, orjson.dumps(_with(path, value)))


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
def test_bytes_orjson_refuses_are_declined(impl: Impl, data: bytes) -> None:
    assert _exact("osv/x.json", data)[0] == "rejected"
    assert impl(data, "src", "sha256:" + "0" * 64) is None


def test_duplicate_keys_last_wins_in_both() -> None:
    doc = b'{"id": "X", "id": "Y", "modified": "2024-01-01T00:00:00Z", "summary": "a", "summary": "s"}'
    assert _check(python_entry, doc)
    assert _check(compiled_entry, doc)
    # msgspec checks each occurrence, orjson only keeps the last: python_entry declines, the compiled
    # path sees what the exact reader sees (orjson's dict) and agrees with it.
    doc = b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "summary": 1, "summary": "s"}'
    assert not _check(python_entry, doc)
    assert _check(compiled_entry, doc)


def test_msgspec_writes_strings_and_scores_as_orjson_does() -> None:
    """The canonical bytes depend on it: every code point, and every possible CVSS base score."""
    encode = msgspec.json.Encoder().encode
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert encode(text) == orjson.dumps(text)
    for c in range(0x80):
        assert encode(chr(c)) == orjson.dumps(chr(c))
    scores = [i / 10 for i in range(101)] + [round(i * 0.1, 1) for i in range(101)]
    assert encode(scores) == orjson.dumps(scores)


def test_corpus_documents_agree(impl: Impl, corpus: Path) -> None:
    """Every golang JSON document of the shared corpus: the same bytes, and nearly all take the fast path."""
    taken = total = 0
    for path in sorted((corpus / "osv").rglob("*.json")):
        total += 1
        taken += _check(impl, path.read_bytes(), str(path))
    assert total == 4291
    assert taken >= 0.99 * total




@pytest.mark.parametrize(
    ("path", "value"),
    [
        # Every string the output carries, with characters that are escaped, kept raw or multi-byte.
        (["summary"], ODD),
        (["details"], ODD * 50),
        (["id"], "ID-" + ODD),
        (["aliases"], [ODD, "CVE-2024-1"]),
        (["references", 0, "url"], ODD),
        (["references", 1, "type"], ODD),
        (["affected", 0, "package", "name"], ODD),
        (["affected", 0, "package", "ecosystem"], ODD),
        (["affected", 0, "versions"], [ODD, "1", ODD]),
        (["affected", 0, "ranges", 0, "events", 0], {"introduced": ODD}),
        (["database_specific", "cwe_ids"], [ODD, "CWE-1"]),
        # The lowest CVE: by year, then by number (not by text), leading zeros included.
        (["aliases"], ["CVE-2021-10000", "CVE-2021-9999", "CVE-2022-0001"]),
        (["aliases"], ["CVE-2021-0009999", "CVE-2021-10000", "CVE-2021-9999"]),
        (["aliases"], ["CVE-2021-999", "CVE-21-10000", "CVE-2021-1000x", "cve-2000-1111", "CVE-2021-1000"]),
        (["aliases"], ["CVE-\u0662\u0660\u0662\u0661-1234", "CVE-2024-5"]),
        (["aliases"], ["CVE-2021-1234\u0663", "CVE-2024-55555"]),
        (["aliases"], ["\tCVE-2021-1234\x1c", "CVE-2021-1234"]),
        # Severity words: case, Unicode whitespace and case rules.
        (["database_specific", "severity"], " High "),
        (["database_specific", "severity"], "\x1cmoderate\x1f"),
        (["database_specific", "severity"], "CRITICAL"),
        (["database_specific", "severity"], "H\u0130GH"),
        (["database_specific", "severity"], "\u0130mportant"),
        (["database_specific", "severity"], "importantx"),
        (["database_specific", "severity"], ""),
        (["database_specific"], {"severity": None, "cwe_ids": []}),
        # Ranges: empty values (null and "" would sort alike), duplicates, a bare fixed beside a range.
        (["affected", 0, "ranges", 0, "events", 0], {"introduced": ""}),
        (["affected", 0, "ranges"], [{"type": "SEMVER", "events": [{"introduced": "1"}, {"fixed": "2"}]}] * 3),
        (["affected", 0, "ranges", 0, "events"], [{"last_affected": "3"}, {"fixed": "4"}, {"introduced": "5"}]),
        (["affected", 0, "ranges", 0, "events"], [{"introduced": "1"}, {"introduced": "2"}, {"limit": "3"}]),
        # Long lists are left to the exact reader by the compiled path.
        (["affected", 0, "versions"], [str(i) for i in range(600)]),
        (["references"], [{"type": "WEB", "url": f"https://x.example/{i}"} for i in range(600)]),
        (["aliases"], [f"GHSA-{i}" for i in range(700)]),
        # Keys that are not plain ASCII field names.
        (["summ\u00e4ry"], "x"),
        ([""], "x"),
    ],
)
def test_escapes_ids_and_edge_shapes_agree(impl: Impl, path: list[Any], value: Any) -> None:
    _check(impl, orjson.dumps(_with(path, value)))




def test_random_mutations_agree(impl: Impl) -> None:
    """A seeded differential fuzz: 1–3 random edits of the full document, ~2,000 variants."""
    rng = random.Random(20261129)
    taken = 0
    total = 2000
    for _ in range(total):
        doc: Any = BASE
        for _ in range(rng.randint(1, 3)):
            paths = leaf_paths(doc, [])
            path = rng.choice(paths)
            if rng.random() < 0.15:  # a new key beside an existing one
                path = [*path[:-1], rng.choice(["extra", "ranges", "purl", "severity", "events", "cwe_ids"])]
            try:
                doc = edited(doc, path, rng.choice(EDITS))
            except (KeyError, IndexError, TypeError):
                continue
        taken += _check(impl, orjson.dumps(doc))
    # Mostly harmless edits: a good share must still take the fast path, or the fuzz tests nothing.
    assert taken > total // 5
