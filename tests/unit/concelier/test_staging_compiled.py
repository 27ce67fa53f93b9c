"""The compiled staging paths against the Python staging path they replace.

``_osvc.stage_files`` (reads, hashes, decodes and stages runs of files), ``_osvc.stage`` (one decoded
document) and the Python path must write byte-identical staging files (entries, offsets, key
candidates, alias buckets) and report the same counts and source tallies, whatever the documents:
real, constructed, mutated, malformed, too big for one read, or not JSON at all (what the compiled
paths decline goes to the general path, in order).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from osv_documents import BASE, EDITS, ODD, leaf_paths

from jsonedit import edited
from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.sources import iter_file_lists, osv_fast
from stella_mirror.concelier.staging import Chunk, ChunkResult, StageConfig, Stager

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus"


def _stage(work: Path, paths: list[str], buckets: int, mode: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    work.mkdir()
    module = osv_fast.compiled_module
    assert module is not None
    with monkeypatch.context() as m:
        if not mode.startswith("files"):
            m.setattr(osv_fast, "compiled_stage_files", None)
        if mode == "python":
            m.setattr(osv_fast, "compiled_stage", None)
        module.use_native_sha256(mode != "files-hashlib")  # digests by hashlib, as on a CPU without SHA-NI
        try:
            stager = Stager(StageConfig(str(work), buckets, (DomainFilter(),), {"osv": "osv"}, 1 << 20), "t")
            results: list[ChunkResult] = []
            for i in range(0, len(paths), 64):
                results.append(stager.read_chunk(Chunk("src", "osv", 3, paths[i : i + 64])))
            stager.close()
        finally:
            module.use_native_sha256(True)
    files = {p.name: p.read_bytes() for p in sorted(work.iterdir())}
    return files, [(r.read, r.skipped, r.records, r.rejected, r.tally) for r in results]


def _compare(tmp_path: Path, paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert osv_fast.compiled_stage is not None and osv_fast.compiled_stage_files is not None, "not built"
    for buckets in (1, 4):
        slow = _stage(tmp_path / f"p{buckets}", paths, buckets, "python", monkeypatch)
        for mode in ("files", "files-hashlib", "one"):
            fast = _stage(tmp_path / f"{mode}{buckets}", paths, buckets, mode, monkeypatch)
            assert fast[1] == slow[1], mode
            assert fast[0].keys() == slow[0].keys(), mode
            for name in fast[0]:
                assert fast[0][name] == slow[0][name], (mode, name)


def _write(folder: Path, docs: list[bytes]) -> list[str]:
    folder.mkdir()
    paths = []
    for i, data in enumerate(docs):
        path = folder / f"doc-{i:05d}.json"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def test_constructed_mutated_and_malformed_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    docs = [orjson.dumps(BASE), orjson.dumps(edited(BASE, ["summary"], ODD))]
    for _ in range(400):
        doc: Any = BASE
        for _ in range(rng.randint(1, 3)):
            try:
                doc = edited(doc, rng.choice(leaf_paths(doc, [])), rng.choice(EDITS))
            except (KeyError, IndexError, TypeError):
                continue
        docs.append(orjson.dumps(doc))
    docs += [b"{not json", b"[]", b'{"id": "X"}', b"\xff\xfe", b""]
    # Over one 64 KiB read (the Python path reads it), and a document of the common shape again after it.
    docs += [orjson.dumps(edited(BASE, ["details"], "x" * 70_000)), orjson.dumps(BASE)]
    paths = _write(tmp_path / "docs", docs)
    # Not JSON by name, and unreadable: both taken by the general path in between.
    yaml = tmp_path / "docs" / "doc-00100-b.yaml"
    yaml.write_text("id: Y-1\nmodified: 2024-01-01T00:00:00Z\n")
    missing = str(tmp_path / "docs" / "gone.json")
    paths[100:100] = [str(yaml), missing]
    _compare(tmp_path, paths, monkeypatch)


def test_documents_across_folders_in_any_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stage_files opens each file relative to the folder of the one before when it is the same folder."""
    rng = random.Random(11)
    paths = []
    for name in ("a", "b", "a/deeper", "c d", "é"):
        folder = tmp_path / "docs" / name
        folder.mkdir(parents=True)
        for i in range(12):
            doc = edited(BASE, ["id"], f"OSV-{name}-{i}")
            (folder / f"{i}.json").write_bytes(
                orjson.dumps(edited(doc, ["aliases"], [f"CVE-2024-{rng.randint(1, 30)}"]))
            )
            paths.append(str(folder / f"{i}.json"))
    rng.shuffle(paths)
    paths[5:5] = [str(tmp_path / "docs" / "a"), str(tmp_path / "docs" / "none" / "x.json")]  # a folder; no folder
    _compare(tmp_path, paths, monkeypatch)


def test_sha256_matches_hashlib() -> None:
    module = osv_fast.compiled_module
    assert module is not None
    rng = random.Random(5)
    samples = [rng.randbytes(n) for n in [*range(300), 4095, 4096, 65_537, 1 << 20]]
    try:
        for native in (True, False):
            module.use_native_sha256(native)
            for data in samples:
                assert module.sha256_hex(data) == hashlib.sha256(data).hexdigest(), (native, len(data))
            assert module.sha256_hex(memoryview(samples[-1])[3:]) == hashlib.sha256(samples[-1][3:]).hexdigest()
        assert module.use_native_sha256(False) is False
    finally:
        module.use_native_sha256(True)


def test_corpus_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    paths = sorted(str(p) for p in (CORPUS / "osv").rglob("*.json"))
    assert len(paths) == 4291
    _compare(tmp_path, paths, monkeypatch)


def test_count_files_counts_as_the_python_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regular files only; dot-names skipped; symbolic links (to files or folders) not followed."""
    from stella_mirror.concelier import export
    from stella_mirror.concelier.sources import SourceSpec

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
    (root / "linkdir").symlink_to(root / "a", target_is_directory=True)
    os.mkfifo(root / "pipe")
    spec = SourceSpec("osv", "osv", root)
    assert osv_fast.compiled_count_files is not None
    compiled = export._count_files(spec)
    monkeypatch.setattr(osv_fast, "compiled_count_files", None)
    assert compiled == export._count_files(spec) == 2 + 3 + 4
    if CORPUS.is_dir():
        for folder in (CORPUS / "osv", CORPUS / "csaf"):
            assert osv_fast._osvc.count_files(str(folder)) == export._count_files(SourceSpec("s", "osv", folder))
    assert osv_fast._osvc.count_files(str(tmp_path / "missing")) is None


def _python_listing(spec: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    with monkeypatch.context() as m:
        m.setattr(osv_fast, "compiled_list_dir", None)
        return list(iter_file_lists(spec))


def test_list_dir_lists_as_the_python_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files, then subfolders, sorted by name (code point order, non-ASCII included); dot-names, links and
    other kinds skipped; a folder with a name that is not UTF-8 is listed by Python (which keeps it)."""
    from stella_mirror.concelier.sources import SourceSpec

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
    spec = SourceSpec("osv", "osv", root)
    compiled = list(iter_file_lists(spec))
    assert compiled == _python_listing(spec, monkeypatch)
    assert [p.removeprefix(str(root)) for p in compiled[0]] == [
        "/e.json",
        "/z.json",
        "/ß",
        "/é.json",
        "/€.json",
        "/😀.json",
    ]
    assert osv_fast._osvc.list_dir(str(root) + "/") == osv_fast._osvc.list_dir(str(root))  # no "//" in paths
    assert osv_fast._osvc.list_dir(str(tmp_path / "missing")) is None
    odd = os.fsencode(root / "b") + b"/\xff.json"
    with open(odd, "wb") as fh:
        fh.write(b"{}")
    assert osv_fast._osvc.list_dir(str(root / "b")) is None
    assert list(iter_file_lists(spec)) == _python_listing(spec, monkeypatch)
    assert os.fsdecode(odd) in [p for files in iter_file_lists(spec) for p in files]


def test_chunks_take_the_next_paths_across_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stella_mirror.concelier import export
    from stella_mirror.concelier.sources import SourceSpec

    root = tmp_path / "src"
    for i, size in enumerate([3, 0, 7, 1, 12, 5]):
        (root / f"d{i}").mkdir(parents=True)
        for j in range(size):
            (root / f"d{i}" / f"{j:02d}.json").write_text("{}")
    spec = SourceSpec("osv", "osv", root)
    flat = [p for files in _python_listing(spec, monkeypatch) for p in files]
    monkeypatch.setattr(export, "CHUNK_DOCUMENTS", 4)
    req: Any = type("Req", (), {"sources": [spec, SourceSpec("again", "osv", root / "d4", 1)]})()
    chunks = list(export._chunks(req))
    assert [c.paths for c in chunks if c.source == "osv"] == [flat[i : i + 4] for i in range(0, len(flat), 4)]
    assert [len(c.paths) for c in chunks if c.source == "again"] == [4, 4, 4]
