"""Each Concelier domain's own signed index: the export's index restricted to it, checked by ``verify``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stella_mirror.bundle.keyfiles import generate_keypair, load_trusted_keys
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.bundle.store import verify_path
from stella_mirror.errors import MalformedBundleError, SignatureError
from stella_mirror.timeutil import utcnow
from treebuilder import advisory, publish_concelier


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path]:
    key: SigningKey = generate_keypair(tmp_path / "keys")
    root = tmp_path / "root"
    return publish_concelier(root, key, {"primary": [advisory("CVE-1")], "community": [advisory("X-1")]}, "e1"), root


def test_each_domain_has_the_index_restricted_to_it(export: tuple[Path, Path], tmp_path: Path) -> None:
    exp, root = export
    full = json.loads((exp / "mirror/index.json").read_text())
    for entry in full["domains"]:
        own = json.loads((exp / "mirror" / entry["domainId"] / "index.json").read_text())
        assert own == {**full, "domains": [entry]}
        assert (exp / "mirror" / entry["domainId"] / "index.json.jws").is_file()
    verdict = verify_path(root, load_trusted_keys([tmp_path / "keys/mirror-key.pub"]), utcnow())
    assert verdict.domains == ["community", "primary"]


def test_a_domain_index_that_differs_or_is_unsigned_fails_verify(export: tuple[Path, Path], tmp_path: Path) -> None:
    exp, root = export
    keys = load_trusted_keys([tmp_path / "keys/mirror-key.pub"])
    own = exp / "mirror/community/index.json"
    own.write_bytes(own.read_bytes().replace(b'"community"', b'"communitz"', 1))
    with pytest.raises(SignatureError) as exc:
        verify_path(root, keys, utcnow())
    assert exc.value.path == "mirror/community/index.json.jws"
    # Signed, but not the index restricted to the domain: copy primary's signed index over community's.
    for suffix in ("", ".jws", ".sig"):
        source = exp / f"mirror/primary/index.json{suffix}"
        (exp / f"mirror/community/index.json{suffix}").write_bytes(source.read_bytes())
    with pytest.raises(MalformedBundleError) as bad:
        verify_path(root, keys, utcnow())
    assert bad.value.path == "mirror/community/index.json"
