"""Reading one source document: whole files, and the per-document size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from stella_mirror.concelier.sources import load_records, read_bytes
from stella_mirror.errors import MalformedDocumentError
from stella_mirror.formats.reader import Rejected


@pytest.mark.parametrize("size", [0, 1, 2663, 65535, 65536, 65537, 300_000])
def test_whole_file_under_the_limit(tmp_path: Path, size: int) -> None:
    path = tmp_path / "doc.json"
    data = bytes(i % 251 for i in range(size))
    path.write_bytes(data)
    assert read_bytes(str(path), 1 << 20) == data
    assert read_bytes(str(path), size) == data  # exactly at the limit


@pytest.mark.parametrize("size", [101, 70_000])
def test_over_the_limit_names_the_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b"x" * size)
    with pytest.raises(MalformedDocumentError) as err:
        read_bytes(str(path), 100)
    assert err.value.path == str(path) and err.value.pointer == ""
    assert err.value.reason == f"document is {size} bytes, over the 100-byte limit"
    outcome = load_records(str(path), "osv", "src", 100)
    assert outcome == Rejected(str(path), "", f"{path}: document is {size} bytes, over the 100-byte limit")


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(MalformedDocumentError, match="cannot read: No such file or directory"):
        read_bytes(str(tmp_path / "missing.json"), 100)
