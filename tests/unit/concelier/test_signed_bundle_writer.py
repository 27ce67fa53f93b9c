"""``open_signed`` (how the Concelier export writes its bundles): signatures from hashes taken while writing."""

from __future__ import annotations

from pathlib import Path

import pytest

from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.bundle.files import SigningWriter, open_signed, sign_file
from stella_mirror.bundle.signing import TrustedKeys, generate, verify_blob_sig, verify_detached_jws
from stella_mirror.errors import SignatureError


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_signatures_verify_like_sign_files(tmp_path: Path, alg: str) -> None:
    key = generate(alg)
    trusted = TrustedKeys([key.public])
    payload = [b'{"advisories":[', b"x" * 3_000_000, b"]}\n"]
    path = tmp_path / "bundle.json"
    with open_signed(path, key, "mirror/d/") as out:
        for part in payload:
            out.write(part)
    data = b"".join(payload)
    assert path.read_bytes() == data
    assert out.digest == sha256_bytes(data) and out.size == len(data)
    assert out.signature == {"path": "mirror/d/bundle.json.jws", "algorithm": key.alg, "keyId": key.kid}
    jws = path.with_name("bundle.json.jws").read_bytes()
    sig = path.with_name("bundle.json.sig").read_bytes()
    assert verify_detached_jws(jws, data, trusted) == key.kid
    assert verify_blob_sig(sig, data, trusted) == key.kid
    with pytest.raises(SignatureError):
        verify_detached_jws(jws, data + b" ", trusted)
    # The same files sign_file writes (ECDSA signatures are randomised: compare by verifying both).
    sign_file(key, path, "mirror/d/")
    assert verify_detached_jws(path.with_name("bundle.json.jws").read_bytes(), data, trusted) == key.kid
    assert jws.split(b".")[0] == path.with_name("bundle.json.jws").read_bytes().split(b".")[0]


def test_nothing_is_written_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    with pytest.raises(RuntimeError), open_signed(path, generate("ES256")) as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_interleaved_large_and_small_writes_keep_their_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large blocks go to background threads, small ones are gathered into blocks: the file is in order.

    The file is also handed to ``fdatasync`` every 200 kB here (every 32 MiB by default) while it grows.
    """
    monkeypatch.setattr(SigningWriter, "_SYNC_EVERY", 200_000)
    key = generate("ES256")
    trusted = TrustedKeys([key.public])
    parts = []
    for i in range(40):
        parts.append(bytes([65 + i % 26]) * (70_000 + i * 1_001))  # background
        parts.append(b",%d," % i)  # gathered, then queued before the next large block
    path = tmp_path / "bundle.json"
    with open_signed(path, key) as out:
        for part in parts:
            out.write(part)
        assert out.digest == sha256_bytes(b"".join(parts))  # reading the digest waits for the threads
        out.write(b"x" * 100_000)
    data = b"".join(parts) + b"x" * 100_000
    assert path.read_bytes() == data
    assert out.size == len(data) and out.digest == sha256_bytes(data)
    assert verify_detached_jws(path.with_name("bundle.json.jws").read_bytes(), data, trusted) == key.kid
    assert verify_blob_sig(path.with_name("bundle.json.sig").read_bytes(), data, trusted) == key.kid


def test_a_failing_background_write_fails_the_export_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    with pytest.raises(ValueError, match="closed file"), open_signed(path, generate("ES256")) as out:
        out.write(b"y" * 200_000)
        out.digest  # noqa: B018 - the first block is on disk
        out._raw.close()  # the file lane's next write fails in its thread  # type: ignore[attr-defined]
        for _ in range(10):
            out.write(b"z" * 200_000)  # raises once the failure is seen (or finish() does)
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith("bundle-")]


def test_a_small_bundle_starts_no_thread(tmp_path: Path) -> None:
    key = generate("ES256")
    path = tmp_path / "bundle.json"
    with open_signed(path, key) as out:
        for i in range(100):
            out.write(b'{"n":%d},' % i)
        assert not [t for t in __import__("threading").enumerate() if t.name.startswith("bundle-")]
    data = b"".join(b'{"n":%d},' % i for i in range(100))
    assert path.read_bytes() == data and out.digest == sha256_bytes(data)
    assert verify_detached_jws(path.with_name("bundle.json.jws").read_bytes(), data, TrustedKeys([key.public]))
