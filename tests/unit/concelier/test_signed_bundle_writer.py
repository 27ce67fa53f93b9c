"""``open_signed`` (how the Concelier export writes its bundles): signatures from hashes taken while writing."""

from __future__ import annotations

from pathlib import Path

import pytest

from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.bundle.files import open_signed, sign_file
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
