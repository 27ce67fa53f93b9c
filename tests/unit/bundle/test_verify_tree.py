"""Round trip and tampering for the tree writers and the pure verifier."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stella_mirror.bundle import store
from stella_mirror.bundle.keyfiles import generate_keypair, load_trusted_keys
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.errors import DigestError, ExpiredError, MalformedBundleError, RollbackError, SignatureError
from treebuilder import advisory, publish_concelier, publish_excititor

NOW = datetime.now(UTC)


def _keys(keydir: Path):
    return load_trusted_keys([keydir / "mirror-key.pub"])


def _concelier(tmp_path: Path, key: SigningKey) -> Path:
    return publish_concelier(
        tmp_path / "root",
        key,
        {"primary": [advisory("CVE-2024-0001"), advisory("CVE-2024-0002")], "community": [advisory("GHSA-x")]},
        "e1",
    )


def test_concelier_round_trip(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    _concelier(tmp_path, signing_key)
    v = store.verify_path(tmp_path / "root", _keys(keydir), NOW)
    assert v.product == "concelier" and v.sequence == 1 and v.domains == ["community", "primary"]
    assert v.key_ids == {signing_key.kid}
    # a second export gets the next sequence and becomes latest
    publish_concelier(tmp_path / "root", signing_key, {"primary": [advisory("CVE-1")]}, "e2")
    v2 = store.verify_path(tmp_path / "root", _keys(keydir), NOW)
    assert (v2.export_id, v2.sequence) == ("e2", 2)


def _flip(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("mirror/primary/bundle.json", DigestError),
        ("mirror/primary/bundle.json.jws", SignatureError),
        ("mirror/index.json", SignatureError),
        ("mirror/index.json.jws", SignatureError),
        ("mirror/primary/manifest.json", DigestError),
        ("mirror/primary/bundle.json.sig", SignatureError),
    ],
)
def test_concelier_tampering(tmp_path: Path, keydir: Path, signing_key: SigningKey, target: str, error: type) -> None:
    export = _concelier(tmp_path, signing_key)
    _flip(export / target, offset=-12 if target.endswith((".jws", ".sig")) else 10)
    with pytest.raises(error) as info:
        store.verify_path(tmp_path / "root", _keys(keydir), NOW)
    assert target.split("/")[-1].split(".")[0] in info.value.path


def test_swapped_domain_bundle_is_refused(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    export = _concelier(tmp_path, signing_key)
    for suffix in ("", ".jws", ".sig"):
        shutil.copy(export / f"mirror/community/bundle.json{suffix}", export / f"mirror/primary/bundle.json{suffix}")
    with pytest.raises(DigestError, match=r"primary/bundle\.json"):
        store.verify_path(tmp_path / "root", _keys(keydir), NOW)


def test_expired_and_rollback(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    _concelier(tmp_path, signing_key)
    with pytest.raises(ExpiredError):
        store.verify_path(tmp_path / "root", _keys(keydir), NOW + timedelta(days=8))
    with pytest.raises(RollbackError, match="older than the last seen sequence 5"):
        store.verify_path(tmp_path / "root", _keys(keydir), NOW, min_sequence=5)
    store.verify_path(tmp_path / "root", _keys(keydir), NOW, min_sequence=1)


def test_untrusted_key_is_refused(tmp_path: Path, signing_key: SigningKey) -> None:
    _concelier(tmp_path, signing_key)
    generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        store.verify_path(tmp_path / "root", load_trusted_keys([tmp_path / "other/mirror-key.pub"]), NOW)


def test_key_rotation_accepts_any_trusted_key(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    _concelier(tmp_path, signing_key)
    generate_keypair(tmp_path / "new")
    keys = load_trusted_keys([tmp_path / "new/mirror-key.pub", keydir / "mirror-key.pub"])
    assert store.verify_path(tmp_path / "root", keys, NOW).sequence == 1


def test_excititor_round_trip_and_tamper(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    export = publish_excititor(
        tmp_path / "vex", signing_key, {"community": {"consensus": [{"a": 1}], "claims": [{"b": 2}, {"c": 3}]}}, "v1"
    )
    v = store.verify_path(tmp_path / "vex", _keys(keydir), NOW)
    assert v.product == "excititor" and v.domains == ["community"] and v.files_checked == 3
    _flip(export / "mirror/community/exports/claims/claims.json", 3)
    with pytest.raises(DigestError, match=r"claims\.json"):
        store.verify_path(tmp_path / "vex", _keys(keydir), NOW)


def test_missing_file_is_malformed(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    export = _concelier(tmp_path, signing_key)
    (export / "mirror/primary/bundle.json.sig").unlink()
    with pytest.raises(MalformedBundleError, match="missing"):
        store.verify_path(tmp_path / "root", _keys(keydir), NOW)


def test_prune_keeps_active_and_newest(tmp_path: Path, signing_key: SigningKey) -> None:
    for i in range(5):
        publish_concelier(tmp_path / "root", signing_key, {"p": [advisory(f"CVE-{i}")]}, f"e{i}", keep=2)
    names = sorted(p.name for p in (tmp_path / "root").iterdir() if not p.name.startswith("."))
    assert names == ["e3", "e4", "latest"]
