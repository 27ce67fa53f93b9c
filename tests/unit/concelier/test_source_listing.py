"""Which files of a source folder an export reads, in which order, and how they are cut into reader tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stella_mirror.concelier import export
from stella_mirror.concelier.sources import SourceSpec, iter_file_lists


def test_files_then_subfolders_sorted_by_code_point(tmp_path: Path) -> None:
    """Dot folders, symbolic links and other kinds of files are skipped; dot files are listed (the reader skips
    and names them); a name that is not UTF-8 is kept."""
    root = tmp_path / "src"
    for folder in ["b", "a", "a/z", "a/é", "a/ä/deep", "Z", ".hidden"]:
        (root / folder).mkdir(parents=True)
    for name in [
        "b/2.json",
        "b/10.json",
        "a/x.json",
        "a/é/1.json",
        "a/ä/deep/0.json",
        "Z/y",
        ".hidden/h.json",
        "é.json",
        "e.json",
        "z.json",
        "ß",
        "€.json",
        "😀.json",
        ".dot.json",
    ]:
        (root / name).write_text("{}")
    (root / "link.json").symlink_to(root / "e.json")
    (root / "linkdir").symlink_to(root / "a", target_is_directory=True)
    os.mkfifo(root / "pipe")
    odd = os.fsencode(root / "b") + b"/\xff.json"
    with open(odd, "wb") as fh:
        fh.write(b"{}")
    listing = [[p.removeprefix(str(root)) for p in files] for files in iter_file_lists(SourceSpec("osv", "osv", root))]
    assert listing == [
        ["/.dot.json", "/e.json", "/z.json", "/ß", "/é.json", "/€.json", "/😀.json"],
        ["/Z/y"],
        ["/a/x.json"],
        ["/a/ä/deep/0.json"],
        ["/a/é/1.json"],
        ["/b/10.json", "/b/2.json", os.fsdecode(odd).removeprefix(str(root))],
    ]


def test_the_file_count_is_the_listing(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.json").write_text("{}")
    for i, folder in enumerate([root, root / "a", root / "a" / "b" / "c"]):
        for j in range(i + 2):
            (folder / f"f{j}.json").write_text("{}")
    (root / ".dot.json").write_text("{}")
    (root / "link.json").symlink_to(root / "f0.json")
    os.mkfifo(root / "pipe")
    assert export._count_files(SourceSpec("osv", "osv", root)) == 2 + 3 + 4 + 1  # .dot.json counts, .hidden/ not


def test_dot_files_are_skipped_and_named(tmp_path: Path) -> None:
    from stella_mirror.concelier.sources import load_records
    from stella_mirror.formats.reader import Skipped

    (tmp_path / ".x.json").write_text('{"id": "X", "modified": "2024-01-01T00:00:00Z"}')
    (tmp_path / "notes.txt").write_text("hello")
    dot, notes = str(tmp_path / ".x.json"), str(tmp_path / "notes.txt")
    assert load_records(dot, "osv", "osv", 1 << 20) == Skipped(dot, "dot file (hidden): not read")
    assert load_records(notes, "osv", "osv", 1 << 20) == Skipped(notes, "not an OSV .json/.yaml file")


def test_a_missing_source_folder_is_a_configuration_error(tmp_path: Path) -> None:
    from stella_mirror.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a directory"):
        export._count_files(SourceSpec("osv", "osv", tmp_path / "missing"))


def test_chunks_take_the_next_paths_across_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "src"
    for i, size in enumerate([3, 0, 7, 1, 12, 5]):
        (root / f"d{i}").mkdir(parents=True)
        for j in range(size):
            (root / f"d{i}" / f"{j:02d}.json").write_text("{}")
    spec = SourceSpec("osv", "osv", root)
    flat = [p for files in iter_file_lists(spec) for p in files]
    assert len(flat) == 28
    monkeypatch.setattr(export, "CHUNK_DOCUMENTS", 4)
    req: Any = type("Req", (), {"sources": [spec, SourceSpec("again", "osv", root / "d4", 1)]})()
    chunks = list(export._chunks(req))
    assert [c.paths for c in chunks if c.source == "osv"] == [flat[i : i + 4] for i in range(0, len(flat), 4)]
    assert [len(c.paths) for c in chunks if c.source == "again"] == [4, 4, 4]
