"""What the exporters list for transfer — a signed ``.zst`` variant and a chunk table — and how ``verify`` and
``transfer.delta`` treat them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from clitools import flip
from stella_mirror.bundle import chunks, store
from stella_mirror.bundle.keyfiles import load_trusted_keys
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.errors import DigestError
from stella_mirror.timeutil import utcnow
from stella_mirror.transfer import delta
from treebuilder import advisory, publish_concelier, publish_excititor


def _big(n: int = 1500) -> list[dict[str, object]]:
    out = []
    for i in range(n):
        a = advisory(f"CVE-2024-{i:05d}")
        a["description"] = f"text {i} " * 20
        out.append(a)
    return out


def test_concelier_lists_a_zst_variant_and_a_chunk_table(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    export = publish_concelier(tmp_path / "root", signing_key, {"big": _big(), "tiny": [advisory("CVE-1")]}, "e1")
    index = json.loads((export / "mirror" / "index.json").read_bytes())
    by_id = {d["domainId"]: d for d in index["domains"]}
    bundle = export / "mirror" / "big" / "bundle.json"
    (variant,) = by_id["big"]["bundle"]["encodings"]
    assert variant["path"] == "mirror/big/bundle.json.zst"
    zst = (export / variant["path"]).read_bytes()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst) == bundle.read_bytes()
    manifest = json.loads((export / "mirror" / "big" / "manifest.json").read_bytes())
    assert manifest["bundle"] == by_id["big"]["bundle"]
    table = chunks.decode(manifest["bundleChunks"], bundle.stat().st_size, "t")
    assert table == chunks.build(bundle.read_bytes())
    tiny = json.loads((export / "mirror" / "tiny" / "manifest.json").read_bytes())
    assert "bundleChunks" not in tiny  # below chunks.MIN_PAYLOAD: fetched whole

    keys = load_trusted_keys([keydir / "mirror-key.pub"])
    assert store.verify_export_dir(export, keys, utcnow()).domains == ["big", "tiny"]
    # A tree without the variant (synced before variants were listed) still verifies; a wrong one does not.
    (export / variant["path"]).rename(tmp_path / "kept.zst")
    store.verify_export_dir(export, keys, utcnow())
    (tmp_path / "kept.zst").rename(export / variant["path"])
    flip(export / variant["path"], 40)
    with pytest.raises(DigestError, match=r"bundle\.json\.zst"):
        store.verify_export_dir(export, keys, utcnow())


def test_excititor_entries_list_them_too(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    records = [{"id": f"V-{i}", "text": "x" * (i % 200)} for i in range(4000)]
    export = publish_excititor(tmp_path / "root", signing_key, {"vex": {"all": records}}, "x1")
    (entry,) = json.loads((export / "mirror" / "vex" / "index.json").read_bytes())["exports"]
    assert entry["encodings"][0]["path"] == "exports/all/all.json.zst"
    assert chunks.decode(entry["chunks"], entry["sizeBytes"], "t").size == entry["sizeBytes"]
    store.verify_export_dir(export, load_trusted_keys([keydir / "mirror-key.pub"]), utcnow())


def test_decompress_verified_refuses_another_payload(tmp_path: Path) -> None:
    payload = b"hello " * 1000
    src = tmp_path / "p.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(payload))
    target = tmp_path / "p"
    import hashlib

    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    delta.decompress_verified(src, target, len(payload), digest, "p")
    assert target.read_bytes() == payload
    target.write_bytes(b"old")
    with pytest.raises(DigestError, match="more than the signed"):
        delta.decompress_verified(src, target, len(payload) - 1, digest, "p")
    with pytest.raises(DigestError, match="signed"):
        delta.decompress_verified(src, target, len(payload), "sha256:" + "0" * 64, "p")
    assert target.read_bytes() == b"old"


def test_an_altered_chunk_table_is_refused_by_the_signed_manifest_digest(
    tmp_path: Path, keydir: Path, signing_key: SigningKey
) -> None:
    export = publish_concelier(tmp_path / "root", signing_key, {"big": _big()}, "e1")
    path = export / "mirror" / "big" / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["bundleChunks"]["count"] -= 1
    path.write_bytes(json.dumps(manifest).encode())
    with pytest.raises(DigestError, match=r"manifest\.json"):
        store.verify_export_dir(export, load_trusted_keys([keydir / "mirror-key.pub"]), utcnow())
