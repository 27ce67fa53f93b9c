"""Key files on disk: generate a key pair into a directory, load signing and trusted keys.

Layout written by ``stella-mirror keys generate --out DIR``::

    DIR/mirror-key.pem        private key, PKCS#8 PEM, mode 0600
    DIR/mirror-key.pub        public key, SubjectPublicKeyInfo PEM (what cosign/openssl take)
    DIR/jwks.json             the public key as a JWKS (kid = RFC 7638 thumbprint)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from stella_mirror.bundle.files import write_atomic
from stella_mirror.bundle.signing import (
    PublicKey,
    SigningKey,
    TrustedKeys,
    generate,
    jwk_to_public_key,
    jwks,
    load_private_pem,
    load_public_pem,
)
from stella_mirror.errors import ConfigError

PRIVATE_NAME = "mirror-key.pem"
PUBLIC_NAME = "mirror-key.pub"
JWKS_NAME = "jwks.json"


def generate_keypair(out: Path, alg: str = "ES256", force: bool = False) -> SigningKey:
    """Generate a key pair into ``out``; refuse to overwrite an existing key unless ``force``."""
    private_path = out / PRIVATE_NAME
    if private_path.exists() and not force:
        raise ConfigError("keys.out", f"{private_path} already exists (use --force to replace it)")
    key = generate(alg)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(private_path, key.private_pem(), mode=0o600)
    write_atomic(out / PUBLIC_NAME, key.public_pem())
    write_atomic(out / JWKS_NAME, orjson.dumps(jwks([key.public]), option=orjson.OPT_INDENT_2) + b"\n")
    return key


def load_signing_key(path: Path) -> SigningKey:
    """Load a private key PEM; errors name the path, never the content."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("key", f"cannot read private key {path}: {exc.strerror}") from exc
    return load_private_pem(data, source=str(path))


def load_public_keys(path: Path) -> list[PublicKey]:
    """Public keys from a PEM file (public or private) or a JWKS JSON file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("key", f"cannot read key {path}: {exc.strerror}") from exc
    if data.lstrip().startswith(b"{"):
        try:
            doc = orjson.loads(data)
            return [jwk_to_public_key(k) for k in doc["keys"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError("key", f"{path} is not a usable JWKS") from exc
    return [load_public_pem(data, source=str(path))]


def load_trusted_keys(paths: Iterable[Path]) -> TrustedKeys:
    """The trusted key set from several key files (rotation: old and new keys side by side)."""
    keys: list[PublicKey] = []
    for p in paths:
        keys.extend(load_public_keys(p))
    return TrustedKeys(keys)
