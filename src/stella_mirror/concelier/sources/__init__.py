"""Advisory sources: find the documents of a source directory and read one document into records.

:func:`load_records` is what a reader process runs per document (:mod:`stella_mirror.concelier.staging`);
:func:`read_document` wraps it for callers that want the canonical bytes directly. :data:`READERS` is
the table of readers by source kind, each a :class:`~stella_mirror.formats.reader.DocumentReader`. Every document is
identified by its path and the SHA-256 digest of its bytes (the provenance digest).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stella_mirror.concelier import merge
from stella_mirror.concelier.model import Advisory, Doc
from stella_mirror.concelier.sources import csaf, osv
from stella_mirror.concelier.sources.safeload import load_json
from stella_mirror.errors import ConfigError, MalformedDocumentError
from stella_mirror.formats.reader import (
    DocumentReader,
    Outcome,
    Read,
    ReadContext,
    ReadResult,
    Rejected,
    Skipped,
)

KINDS = ("osv", "csaf")
DEFAULT_MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
OSV_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class SourceSpec:
    """One configured source: a directory of documents of one kind.

    ``priority`` is its position in the configuration: lower wins when merged records disagree.
    """

    name: str
    kind: str
    path: Path
    priority: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("sources", f"unknown source kind {self.kind!r} (expected one of {', '.join(KINDS)})")


def iter_file_lists(spec: SourceSpec) -> Iterator[list[str]]:
    """Every regular file below the source folder, in a stable order (names sorted by code point; a
    folder's files before its subfolders'; symbolic links not followed), a folder at a time.

    Dot files are listed (the reader skips them, so they are counted and named like any skipped file);
    dot folders (``.git``, ``.github``) are not entered."""
    if not spec.path.is_dir():
        raise ConfigError("sources", f"source {spec.name}: {spec.path} is not a directory")
    stack = [str(spec.path)]
    while stack:
        files: list[str] = []
        dirs: list[str] = []
        with os.scandir(stack.pop()) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    dirs.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry.path)
        if files:
            yield files
        stack.extend(reversed(dirs))


@dataclass(frozen=True)
class ReadTask:
    """What a reader process needs to know about one document."""

    path: str
    source: str
    kind: str
    priority: int
    max_bytes: int


RecordRow = tuple[int, str, list[str], bytes]
"""A record as :func:`read_document` hands it on: (source priority, own key, aliases, canonical bytes)."""
DocResult = Read[RecordRow] | Skipped | Rejected


def order_key(priority: int, record: Advisory) -> tuple[int, str, str, str]:
    """The sort key of a record within its merge group (source priority, document id, digest, key)."""
    prov = record["provenance"][0]
    return (priority, prov["documentId"], prov["digest"], record["advisoryKey"])


_FIRST_READ = 1 << 16


def read_bytes(path: str, max_bytes: int) -> bytes:
    """The bytes of a file, refused (MalformedDocumentError) when over ``max_bytes``.

    One ``open``/``read``/``close`` for a file under 64 KiB (nearly every advisory): a short read of a
    regular file is its end. Bigger files (and any over the limit) are measured with ``fstat`` and read
    with one ``read`` of exactly their size: reading with a limit-sized buffer (32 MiB) made every small
    document allocate and fault in a huge buffer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, _FIRST_READ)
            if len(data) == _FIRST_READ or len(data) > max_bytes:
                os.lseek(fd, 0, os.SEEK_SET)
                data = _read_sized(path, fd, max_bytes)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MalformedDocumentError(path, "", f"cannot read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise MalformedDocumentError(path, "", f"document is over the {max_bytes}-byte limit")
    return data


def _read_sized(path: str, fd: int, max_bytes: int) -> bytes:
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise MalformedDocumentError(path, "", f"document is {size} bytes, over the {max_bytes}-byte limit")
    data = os.read(fd, size + 1)
    if len(data) > size:  # the file grew after fstat: read on to its end, up to the limit
        parts, total = [data], len(data)
        while total <= max_bytes and (part := os.read(fd, 1 << 20)):
            parts.append(part)
            total += len(part)
        data = b"".join(parts)
    return data


def load_records(path: str, kind: str, source: str, max_bytes: int) -> Outcome[Advisory]:
    """Read one file into source records: :class:`Read` (the records exactly as the source reader maps
    them, not yet in canonical single-record form), :class:`Skipped` (with the reason) or
    :class:`Rejected` (pointer and message)."""
    if os.path.basename(path).startswith("."):
        return Skipped(path, "dot file (hidden): not read")
    if kind == "csaf" and not path.endswith(".json"):
        return Skipped(path, "not a .json file (signature, hash, feed index or listing)")
    if kind == "osv" and not path.endswith(OSV_SUFFIXES):
        return Skipped(path, "not an OSV .json/.yaml file")
    try:
        data = read_bytes(path, max_bytes)
    except MalformedDocumentError as exc:
        return Rejected.of(exc)
    return parse_records(path, kind, source, data, "sha256:" + hashlib.sha256(data).hexdigest())


class OsvReader:
    """OSV as a :class:`~stella_mirror.formats.reader.DocumentReader` over :func:`.osv.to_record`.

    A source's kind says its documents are OSV, so every parsed object is read, and one that is not
    valid OSV is rejected with the pointer of the bad field (not skipped as "another format").
    """

    format = "osv"

    def detect(self, doc: Any) -> bool:
        """True for a parsed JSON/YAML object."""
        return isinstance(doc, dict)

    def read(self, doc: Any, ctx: ReadContext) -> ReadResult[Advisory]:
        """The one source record of an OSV document."""
        return ReadResult(self.format, [osv.to_record(Doc(ctx.path), doc, ctx.source, ctx.digest)])


READERS: dict[str, DocumentReader[Advisory]] = {"osv": OsvReader(), "csaf": csaf.CsafAdvisoryReader()}
"""Concelier's readers, by source kind (the one reader table; Excititor's is ``excititor.sources.READERS``)."""
_PARSERS: dict[str, Callable[[str, bytes], Any]] = {"osv": osv.load, "csaf": load_json}
"""How each kind's bytes are parsed (OSV may be YAML)."""


def parse_records(path: str, kind: str, source: str, data: bytes, digest: str) -> Outcome[Advisory]:
    """:func:`load_records` for a file already read (``digest``: of ``data``)."""
    reader = READERS[kind]
    try:
        doc = _PARSERS[kind](path, data)
        if not reader.detect(doc):
            return Skipped(path, f"JSON but not a {kind.upper()} document" + _NOT_CSAF.get(kind, ""))
        return Read(path, reader.read(doc, ReadContext(path, source, digest)))
    except MalformedDocumentError as exc:
        return Rejected.of(exc)
    except RecursionError:
        return Rejected(path, "", f"{path}: document nests too deeply")


_NOT_CSAF = {"csaf": " (no document.csaf_version)"}


def canonical_record(record: Advisory) -> Advisory:
    """A source record in the form a single-record advisory is published in (affected entries folded)."""
    return merge.merge(record["advisoryKey"], [record])


def read_document(task: ReadTask) -> DocResult:
    """Read one file: :class:`Read` with its records in published form as rows, else the outcome."""
    outcome = load_records(task.path, task.kind, task.source, task.max_bytes)
    if not isinstance(outcome, Read):
        return outcome
    rows: list[RecordRow] = []
    for rec in outcome.result.items:
        final = canonical_record(rec)
        rows.append(
            (task.priority, final["advisoryKey"], final["aliases"], orjson.dumps(final, option=orjson.OPT_SORT_KEYS))
        )
    return Read(task.path, ReadResult(outcome.result.format, rows, outcome.result.warnings))
