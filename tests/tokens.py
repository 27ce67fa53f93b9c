"""Minting JWTs and JWKS for tests, with `cryptography` directly (not the library the server verifies with).

Signing by hand keeps the test independent of PyJWT: a bug in how the server uses PyJWT cannot be mirrored
by the same bug in how the tokens were made.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int(n: int, length: int | None = None) -> str:
    return b64url(n.to_bytes(length or (n.bit_length() + 7) // 8, "big"))


@dataclass
class TokenIssuer:
    """One signing key of a test Authority: ``alg`` is ES256, RS256 or EdDSA."""

    alg: str = "ES256"
    kid: str = "test-key-1"
    issuer: str = "https://authority.test"
    audience: str = "stella-mirror"
    key: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.key is None:
            if self.alg == "ES256":
                self.key = ec.generate_private_key(ec.SECP256R1())
            elif self.alg == "RS256":
                self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            elif self.alg == "EdDSA":
                self.key = ed25519.Ed25519PrivateKey.generate()
            else:
                raise ValueError(self.alg)

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK."""
        pub = self.key.public_key()
        if self.alg == "ES256":
            nums = pub.public_numbers()
            jwk = {"kty": "EC", "crv": "P-256", "x": _int(nums.x, 32), "y": _int(nums.y, 32)}
        elif self.alg == "RS256":
            nums = pub.public_numbers()
            jwk = {"kty": "RSA", "n": _int(nums.n), "e": _int(nums.e)}
        else:
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))}
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def jwks(self, *others: TokenIssuer) -> dict[str, Any]:
        return {"keys": [self.jwk(), *(o.jwk() for o in others)]}

    def sign(self, signing_input: bytes) -> bytes:
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if self.alg == "RS256":
            return bytes(self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
        return bytes(self.key.sign(signing_input))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for a concelier reader, with overrides (``None`` removes a claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": "downstream-1", "iat": now, "nbf": now - 1,
            "exp": now + 300, "scope": "concelier.mirror.read",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, header: dict[str, Any] | None = None, **overrides: Any) -> str:
        """A compact JWS over ``claims(**overrides)``."""
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(self.claims(**overrides)).encode())}"
        return f"{signing_input}.{b64url(self.sign(signing_input.encode()))}"
