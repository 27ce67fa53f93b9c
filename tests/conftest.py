"""Shared fixtures: keys, corpus location, tree building."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.bundle.signing import SigningKey

sys.path.insert(0, str(Path(__file__).parent))

from s3proc import s3_endpoint  # noqa: F401  (fixture: a real S3 endpoint on loopback)

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture
def corpus() -> Path:
    """The shared real-data corpus; tests that need it skip, saying why, when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS} (it lives beside the checkout as ../shared/corpus)")
    return CORPUS


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    generate_keypair(d)
    return d


@pytest.fixture
def signing_key(keydir: Path) -> SigningKey:
    from stella_mirror.bundle.keyfiles import load_signing_key

    return load_signing_key(keydir / "mirror-key.pem")
