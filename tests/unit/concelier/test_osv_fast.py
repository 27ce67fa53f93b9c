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


def test_duplicate_keys_are_declined_or_read_as_orjson_reads_them() -> None:
    for doc in (
        b'{"id": "X", "id": "Y", "modified": "2024-01-01T00:00:00Z", "summary": "a", "summary": "s"}',
        b'{"id": "X", "modified": "2024-01-01T00:00:00Z", "summary": 1, "summary": "s"}',
    ):
        assert _check(python_entry, doc)  # orjson's tree: the last occurrence, as the exact reader sees it
        # The compiled reader declines any key given twice: the exact reader decides.
        assert not _check(compiled_entry, doc)


def test_a_number_orjson_refuses_is_declined(impl: Impl) -> None:
    """msgspec reads integers of any size; orjson refuses one it cannot hold even as a float."""
    data = orjson.dumps(BASE).replace(b'"credits":', b'"upstream": [' + b"9" * 400 + b'], "credits":')
    assert _exact("osv/x.json", data)[0] == "rejected"
    assert impl(data, "src", "sha256:" + "0" * 64) is None


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


def _doc_with(raw_summary: bytes, extra: bytes = b"") -> bytes:
    """BASE as JSON with ``summary`` replaced by raw JSON text (escapes, odd bytes) and more members."""
    body = orjson.dumps(_with(["summary"], "@@"))
    return body.replace(b'"@@"', raw_summary).replace(b'{"schema_version"', b"{" + extra + b'"schema_version"', 1)


@pytest.mark.parametrize(
    ("raw", "taken"),
    [
        # Escapes decoded as orjson decodes them.
        (b'"caf\\u00e9 \\ud83d\\ude00 a\\/b \\" \\\\ \\b\\f\\n\\r\\t \\u0000 \\u2028"', True),
        (b'"plain \xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80"', True),
        # Malformed: orjson refuses them, so every fast path must decline.
        (b'"lone \\ud800"', False),
        (b'"lone \\udc00"', False),
        (b'"pair reversed \\ude00\\ud83d"', False),
        (b'"bad \\u12G4"', False),
        (b'"short \\u12"', False),
        (b'"bad escape \\x41"', False),
        (b'"raw \x01 control"', False),
        (b'"overlong \xc0\x80"', False),
        (b'"overlong \xe0\x80\x80"', False),
        (b'"surrogate \xed\xa0\x80"', False),
        (b'"too big \xf4\x90\x80\x80"', False),
        (b'"truncated \xe2\x80"', False),
        (b'"stray \x80"', False),
        (b'"unterminated', False),
    ],
)
def test_json_strings(impl: Impl, raw: bytes, taken: bool) -> None:
    assert _check(impl, _doc_with(raw)) is taken or impl is python_entry


@pytest.mark.parametrize(
    "extra",
    [
        b'"database_specific": {"n": [0, -0, 1.5, -12.25, 123456789012345678901234567890, true, false, null]},',
        b'"credits": [{"x": 1e5}],',  # the compiled reader declines exponents; orjson reads them
        b'"credits": [{"x": 1E+5}],',
        b'"credits": ' + b"[" * 70 + b"]" * 70 + b",",  # deeper than the compiled reader goes
        b'"credits": [01],',  # malformed from here on
        b'"credits": [1.],',
        b'"credits": [.5],',
        b'"credits": [-],',
        b'"credits": [1,],',
        b'"credits": {"a": 1,},',
        b'"credits": [tru],',
        b'"credits": [nul],',
        b'"credits": [' + b"9" * 400 + b"],",
        b'"credits": {"a": 1, "a": 2},',
    ],
)
def test_json_values_in_fields_not_mapped(impl: Impl, extra: bytes) -> None:
    _check(impl, _doc_with(b'"s"', extra))


@pytest.mark.parametrize(
    "data",
    [b"", b"null", b"[]", b'"x"', b" \n\t\r{}", b"\x0c{}", b"{} {}", b'{"id": "X"', b'{"id" "X"}', b"{,}"],
)
def test_json_documents_that_are_not_one_object(impl: Impl, data: bytes) -> None:
    assert impl(data, "src", "sha256:" + "0" * 64) is None


def test_the_compiled_reader_takes_escaped_documents() -> None:
    """Documents with escapes and non-ASCII text are mapped by the compiled reader itself, not declined."""
    assert _check(compiled_entry, _doc_with(b'"caf\\u00e9 \\ud83d\\ude00 \\n"'))
    assert _check(compiled_entry, orjson.dumps(BASE, option=orjson.OPT_INDENT_2))


def test_random_byte_edits_agree(impl: Impl) -> None:
    """A seeded fuzz of the JSON text itself: bytes replaced, inserted, deleted or the text cut short."""
    rng = random.Random(1129)
    base = orjson.dumps(_with(["summary"], "caf\u00e9 \U0001f600 \\ \" \n"), option=orjson.OPT_INDENT_2)
    alphabet = b'{}[]":,\\/ntfrbu0123456789-.eE \n\t\xc3\xa9\xed\xa0\x80\xff\x00'
    taken = 0
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[at] = rng.choice(alphabet)
            elif op < 0.7:
                data[at:at] = bytes([rng.choice(alphabet)])
            elif op < 0.95:
                del data[at]
            else:
                del data[at:]
        taken += _check(impl, bytes(data))
    assert taken > 300  # many edits land in text and leave a valid document


def test_the_compiled_memo_of_helper_answers_survives_being_cleared() -> None:
    """_osvc remembers purl and CVSS answers by their arguments, and empties the memo when it holds
    2**14 answers: documents before and after that (and one whose answers were dropped meanwhile)
    come out as python_entry writes them."""
    vectors = ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:C/C:L/I:N/A:N"]
    first = None
    for i in range(17_000):
        doc = edited(BASE, ["affected", 0, "package", "name"], f"pkg-{i}")
        doc = edited(doc, ["severity"], [{"type": "CVSS_V3", "score": vectors[i % 2]}])
        data = orjson.dumps(doc)
        entry = compiled_entry(data, "src", "sha256:x")
        assert entry is not None
        if first is None:
            first = (data, entry)
        if i % 997 == 0 or i > 16_380:
            assert entry == python_entry(data, "src", "sha256:x"), i
    assert first is not None
    assert compiled_entry(first[0], "src", "sha256:x") == first[1]


def test_tune_malloc_applies_on_glibc() -> None:
    import platform

    module = osv_fast.compiled_module
    assert module is not None
    assert module.tune_malloc() is (platform.libc_ver()[0] == "glibc")
