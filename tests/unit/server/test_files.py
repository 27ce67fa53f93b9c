"""File semantics: Range parsing, Accept-Encoding, confined opening, precompression, the digest cache."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from stella_mirror.server.exports import ExportNotFound, ExportResolver, RootUnavailable, open_file
from stella_mirror.server.files import (
    FileCache,
    Version,
    choose_encodings,
    parse_accept_encoding,
    parse_range,
    precompress,
    precompress_tree,
)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, (0, 99)),
        ("bytes=100-", 1000, (100, 999)),
        ("bytes=-100", 1000, (900, 999)),
        ("bytes=-5000", 1000, (0, 999)),
        ("bytes=990-5000", 1000, (990, 999)),
        ("BYTES = 0-0", 1000, (0, 0)),
        ("bytes=1000-", 1000, False),
        ("bytes=5000-6000", 1000, False),
        ("bytes=-0", 1000, False),
        ("bytes=0-", 0, False),
        ("bytes=0-1,5-6", 1000, None),
        ("bytes=5-1", 1000, None),
        ("bytes=a-b", 1000, None),
        ("items=0-1", 1000, None),
        ("bytes=", 1000, None),
        ("bytes=-", 1000, None),
        ("bytes=0", 1000, None),
        ("bytes=99999999999999999999-", 1000, None),
        ("bytes=+1-2", 1000, None),
    ],
)
def test_parse_range(header: str, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_accept_encoding_q_values_and_preference() -> None:
    assert choose_encodings(parse_accept_encoding("gzip, zstd")) == [("zstd", ".zst"), ("gzip", ".gz")]
    assert choose_encodings(parse_accept_encoding("gzip;q=1, zstd;q=0.5")) == [("gzip", ".gz"), ("zstd", ".zst")]
    assert choose_encodings(parse_accept_encoding("zstd;q=0, gzip")) == [("gzip", ".gz")]
    assert choose_encodings(parse_accept_encoding("*;q=0.1, gzip;q=0")) == [("zstd", ".zst")]
    assert choose_encodings(parse_accept_encoding("identity")) == []
    assert choose_encodings(parse_accept_encoding("br;q=garbage, gzip;q=2")) == []
    assert choose_encodings(parse_accept_encoding("")) == []


def test_open_file_refuses_symlinks_and_non_regular_files(tmp_path: Path) -> None:
    export = tmp_path / "e1"
    (export / "mirror" / "d").mkdir(parents=True)
    (export / "mirror" / "d" / "ok.json").write_text("{}")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (export / "mirror" / "d" / "link.json").symlink_to(secret)
    (export / "mirror" / "linkdir").symlink_to(tmp_path)
    os.mkfifo(export / "mirror" / "d" / "fifo.json")
    fd = os.open(export, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ok = open_file(fd, ("mirror", "d", "ok.json"))
        assert os.read(ok, 10) == b"{}"
        os.close(ok)
        for parts in [("mirror", "d", "link.json"), ("mirror", "linkdir", "secret.txt"), ("mirror", "d", "fifo.json"),
                      ("mirror", "..", "..", "secret.txt"), ("mirror", "d", ".hidden"), ("mirror", "d", "missing")]:
            with pytest.raises(ExportNotFound):
                open_file(fd, parts)
    finally:
        os.close(fd)


def test_resolver_reads_latest_once_and_pins(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "e1").mkdir(parents=True)
    (root / "e2").mkdir()
    resolver = ExportResolver(root, ttl=0)
    with pytest.raises(RootUnavailable, match="nothing is published"), resolver.open():
        pass
    (root / "latest").symlink_to("e1")
    with resolver.open() as exp:
        assert exp.export_id == "e1"
        # A publish while the request is open does not change the directory this request reads.
        os.replace(_tmp_link(root, "e2"), root / "latest")
        (root / "e1" / "marker").write_text("1")
        assert "marker" in os.listdir(exp.dir_fd)
    with resolver.open() as exp:
        assert exp.export_id == "e2"
    with resolver.open("e1") as exp:
        assert exp.export_id == "e1"
    for bad in ["e9", "latest", "..", ".e1"]:
        with pytest.raises(ExportNotFound), resolver.open(bad):
            pass
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(ExportNotFound), resolver.open("escape"):
        pass
    fixed = ExportResolver(root, "e1", ttl=0)
    with fixed.open() as exp:
        assert exp.export_id == "e1"
    with pytest.raises(RootUnavailable), ExportResolver(tmp_path / "nope").open():
        pass


def test_resolver_reuses_a_resolution_for_its_ttl(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "e1").mkdir(parents=True)
    (root / "e2").mkdir()
    (root / "latest").symlink_to("e1")
    resolver = ExportResolver(root, ttl=0.3)
    assert resolver.resolve().export_id == "e1"
    os.replace(_tmp_link(root, "e2"), root / "latest")
    assert resolver.resolve().export_id == "e1"  # within the TTL: the previous resolution
    import time

    time.sleep(0.35)
    assert resolver.resolve().export_id == "e2"
    assert resolver.resolve("e1").export_id == "e1"  # pins are resolved (and kept) independently


def _tmp_link(root: Path, target: str) -> Path:
    tmp = root / ".latest-tmp"
    tmp.symlink_to(target)
    return tmp


def test_precompress_variants_decode_to_the_original(tmp_path: Path) -> None:
    src = tmp_path / "bundle.json"
    src.write_bytes(b'{"advisories":[' + b",".join(b'{"k":%d}' % i for i in range(5000)) + b"]}\n")
    zst, gz = precompress(src)
    assert zst.name == "bundle.json.zst" and gz.name == "bundle.json.gz"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst.read_bytes()) == src.read_bytes()
    assert gzip.decompress(gz.read_bytes()) == src.read_bytes()
    first = gz.read_bytes()
    precompress(src)
    assert gz.read_bytes() == first, "gzip output must be deterministic (no timestamp)"
    (tmp_path / "tiny.json").write_text("{}")
    (tmp_path / "bundle.json.jws").write_text("x" * 5000)
    written = precompress_tree(tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["bundle.json.gz", "bundle.json.zst"]


def test_file_cache_digests_once_per_version(tmp_path: Path) -> None:
    path = tmp_path / "big"
    data = os.urandom(3 * 1024 * 1024)
    path.write_bytes(data)
    cache = FileCache()
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        version = Version(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

        async def many() -> list[str]:
            return await asyncio.gather(*(cache.digest(fd, version) for _ in range(8)))

        digests = asyncio.run(many())
        assert set(digests) == {hashlib.sha256(data).hexdigest()}
        small, digest = cache.small(fd, Version(st.st_dev, st.st_ino, st.st_mtime_ns, 100))
        assert small == data[:100] and digest == hashlib.sha256(data[:100]).hexdigest()
    finally:
        os.close(fd)
