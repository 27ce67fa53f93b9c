"""Concelier bundle.json schemaVersion 2 names no export; exports of schemaVersion 1 still verify."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from stella_mirror.bundle import canonical, store
from stella_mirror.bundle.files import sign_file, write_atomic
from stella_mirror.bundle.keyfiles import load_trusted_keys
from stella_mirror.bundle.signing import SigningKey
from treebuilder import advisory, publish_concelier

NOW = datetime.now(UTC)


def test_bundle_bytes_do_not_depend_on_the_export(tmp_path: Path, signing_key: SigningKey) -> None:
    advisories = {"primary": [advisory("CVE-2024-0001"), advisory("GHSA-x")]}
    one = publish_concelier(tmp_path / "a", signing_key, advisories, "one")
    two = publish_concelier(tmp_path / "b", signing_key, advisories, "two")
    a, b = (d / "mirror" / "primary" / "bundle.json" for d in (one, two))
    assert a.read_bytes() == b.read_bytes()
    doc = orjson.loads(a.read_bytes())
    assert sorted(doc) == ["advisories", "advisoryCount", "domainId", "schemaVersion"]
    assert doc["schemaVersion"] == 2


def _as_schema_version_1(export: Path, key: SigningKey) -> bytes:
    """Rewrite an export's primary bundle as an older exporter wrote it (schemaVersion 1 with exportId and
    generatedAt), signed again like every file that names it: the manifest, the index, the domain's index."""
    mirror = export / "mirror"
    index = orjson.loads((mirror / "index.json").read_bytes())
    v1 = canonical.dumps(
        {
            **orjson.loads((mirror / "primary" / "bundle.json").read_bytes()),
            "exportId": index["exportId"],
            "generatedAt": index["generatedAt"],
            "schemaVersion": 1,
        }
    )
    ref = write_atomic(mirror / "primary" / "bundle.json", v1)
    sign_file(key, mirror / "primary" / "bundle.json", "mirror/primary/")
    manifest = orjson.loads((mirror / "primary" / "manifest.json").read_bytes())
    manifest["bundle"].update(sizeBytes=ref["sizeBytes"], digest=ref["digest"])
    mref = write_atomic(mirror / "primary" / "manifest.json", canonical.dumps(manifest))
    [entry] = index["domains"]
    entry["bundle"] = manifest["bundle"]
    entry["manifest"].update(sizeBytes=mref["sizeBytes"], digest=mref["digest"])
    write_atomic(mirror / "index.json", canonical.dumps(index))
    sign_file(key, mirror / "index.json", "mirror/")
    write_atomic(mirror / "primary" / "index.json", canonical.domain_index(index, entry))
    sign_file(key, mirror / "primary" / "index.json", "mirror/primary/")
    return v1


def test_schema_version_1_bundles_still_verify(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    export = publish_concelier(tmp_path / "root", signing_key, {"primary": [advisory("CVE-2024-0001")]}, "old")
    v1 = _as_schema_version_1(export, signing_key)
    assert orjson.loads(v1)["schemaVersion"] == 1
    verdict = store.verify_path(tmp_path / "root", load_trusted_keys([keydir / "mirror-key.pub"]), NOW)
    assert (verdict.product, verdict.export_id, verdict.domains) == ("concelier", "old", ["primary"])
