"""Keys and signatures: detached JWS with unencoded payload (RFC 7515 + RFC 7797) and cosign-style .sig.

- Key ids are RFC 7638 JWK thumbprints (SHA-256, base64url) of the public key.
- A JWS file is ``<protected header>..<signature>``; the header is
  ``{"alg":"ES256","b64":false,"crit":["b64"],"kid":…}``, so the signing input is
  ``BASE64URL(header) || "." || payload`` with the payload's raw bytes.
- A ``.sig`` file is the base64 of a DER ECDSA-SHA256 signature over the file's bytes, which
  ``openssl dgst -sha256 -verify`` and ``cosign verify-blob --key`` accept. For EdDSA keys it is the
  base64 Ed25519 signature.

ES256 signing and verification prehash the input, so a multi-GB payload (an mmap) is hashed in place
and never copied. Everything here is pure: bytes and keys in, bytes or a verdict out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from typing_extensions import Buffer

from stella_mirror.errors import ConfigError, SignatureError

ALGORITHMS = ("ES256", "EdDSA")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode base64url with or without padding; raise ValueError on bad input."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if any(c not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" for c in raw):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


# --- JWK and thumbprints --------------------------------------------------------------------------


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK (RFC 7517) of a key, without ``kid``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError("key", "only P-256 EC keys are supported")
        nums = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(nums.x.to_bytes(32, "big")),
            "y": b64url(nums.y.to_bytes(32, "big")),
        }
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    canonical = orjson.dumps({m: jwk[m] for m in members}, option=orjson.OPT_SORT_KEYS)
    return b64url(hashlib.sha256(canonical).digest())


def key_id(key: PublicKey) -> str:
    """The key id we use everywhere: the RFC 7638 thumbprint."""
    return thumbprint(public_jwk(key))


def alg_of(key: PublicKey | PrivateKey) -> str:
    """The JWS algorithm for a key type."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ES256"
    return "EdDSA"


def jwk_to_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """Load a public key from a JWK (EC P-256 or OKP Ed25519)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and crv == "P-256":
        x = int.from_bytes(b64url_decode(jwk["x"]), "big")
        y = int.from_bytes(b64url_decode(jwk["y"]), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    if kty == "OKP" and crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    raise ValueError(f"unsupported JWK kty={kty!r} crv={crv!r}")


# --- signing --------------------------------------------------------------------------------------


def _signing_input_prefix(header: Mapping[str, Any]) -> bytes:
    return b64url(orjson.dumps(header, option=orjson.OPT_SORT_KEYS)).encode("ascii") + b"."


def _sha256_parts(parts: Iterable[Buffer]) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


@dataclass(frozen=True)
class SigningKey:
    """A private key with its algorithm and key id."""

    private: PrivateKey

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    @property
    def alg(self) -> str:
        return alg_of(self.private)

    @property
    def kid(self) -> str:
        return key_id(self.public)

    def jws_header(self) -> dict[str, Any]:
        return {"alg": self.alg, "b64": False, "crit": ["b64"], "kid": self.kid}

    def _sign_parts(self, parts: Iterable[Buffer]) -> bytes:
        """Raw signature over the concatenation of ``parts`` (DER for ECDSA)."""
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(_sha256_parts(parts), ec.ECDSA(Prehashed(hashes.SHA256())))
        # Ed25519 cannot prehash: it needs the whole message (EdDSA is optional, for small payloads).
        return self.private.sign(b"".join(bytes(p) for p in parts))

    def sign_detached_jws(self, payload: Buffer) -> bytes:
        """Compact detached JWS with unencoded payload: ``<header>..<signature>``."""
        prefix = _signing_input_prefix(self.jws_header())
        sig = self._sign_parts([prefix, payload])
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(sig)
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return prefix + b"." + b64url(sig).encode("ascii")

    def sign_blob_b64(self, payload: Buffer) -> bytes:
        """cosign-style signature file content: base64 of a DER ECDSA-SHA256 signature (plus newline)."""
        return base64.b64encode(self._sign_parts([payload])) + b"\n"

    def sign_jws_and_blob(self, payload_parts: Iterable[Buffer]) -> tuple[bytes, bytes]:
        """Both the detached JWS and the ``.sig`` content in ONE pass over the payload.

        For ES256 the two signing inputs (``header.`` + payload, and the payload alone) are hashed
        side by side, so a multi-GB bundle is read once instead of twice.
        """
        if not isinstance(self.private, ec.EllipticCurvePrivateKey):
            payload = b"".join(bytes(p) for p in payload_parts)
            return self.sign_detached_jws(payload), self.sign_blob_b64(payload)
        prefix = _signing_input_prefix(self.jws_header())
        jws_hash, blob_hash = hashlib.sha256(prefix), hashlib.sha256()
        for part in payload_parts:
            jws_hash.update(part)
            blob_hash.update(part)
        algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
        r, s = decode_dss_signature(self.private.sign(jws_hash.digest(), algorithm))
        jws = prefix + b"." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")).encode("ascii")
        sig = base64.b64encode(self.private.sign(blob_hash.digest(), algorithm)) + b"\n"
        return jws, sig

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return public_pem(self.public)


def public_pem(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a public key."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(alg: str = "ES256") -> SigningKey:
    """A fresh key: ES256 (P-256) or EdDSA (Ed25519)."""
    if alg == "ES256":
        return SigningKey(ec.generate_private_key(ec.SECP256R1()))
    if alg == "EdDSA":
        return SigningKey(ed25519.Ed25519PrivateKey.generate())
    raise ConfigError("alg", f"unsupported algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}")


def load_private_pem(data: bytes, source: str = "key") -> SigningKey:
    """Parse a PKCS#8/SEC1 PEM private key. ``source`` names it in errors (never its content)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(source, "not a readable unencrypted PEM private key") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return SigningKey(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SigningKey(key)
    raise ConfigError(source, "only P-256 (ES256) and Ed25519 (EdDSA) private keys are supported")


def load_public_pem(data: bytes, source: str = "key") -> PublicKey:
    """Parse a public key PEM (or a private key PEM, taking its public half)."""
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        return load_private_pem(data, source).public
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ConfigError(source, "only P-256 and Ed25519 public keys are supported")


# --- verification (pure) --------------------------------------------------------------------------


class TrustedKeys:
    """The pinned public keys a consumer trusts, by key id. Several keys allow rotation."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._by_kid: dict[str, PublicKey] = {key_id(k): k for k in keys}
        if not self._by_kid:
            raise ConfigError("key", "at least one trusted public key is required")

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> TrustedKeys:
        return cls(jwk_to_public_key(k) for k in jwks.get("keys", []))

    @property
    def kids(self) -> list[str]:
        return sorted(self._by_kid)

    def get(self, kid: str) -> PublicKey | None:
        return self._by_kid.get(kid)

    def __iter__(self) -> Any:
        return iter(self._by_kid.values())


def _verify_raw(key: PublicKey, signature: bytes, parts: list[Buffer], der: bool, sha256: bytes | None = None) -> bool:
    """Verify ``signature`` over the concatenated ``parts``; ``sha256`` is their SHA-256 when the caller has it
    already (ECDSA signs the digest, so a payload is not hashed twice; EdDSA needs the bytes)."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not der:
                if len(signature) != 64:
                    return False
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                signature = encode_dss_signature(r, s)
            digest = sha256 if sha256 is not None else _sha256_parts(parts)
            key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            key.verify(signature, b"".join(bytes(p) for p in parts))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_detached_jws(jws: bytes, payload: Buffer, keys: TrustedKeys, path: str = "") -> str:
    """Verify a detached, unencoded-payload compact JWS over ``payload``; return the signing key id.

    Raises :class:`SignatureError` naming ``path`` when the JWS is malformed, uses an algorithm or key
    we do not trust, or does not verify.
    """
    text = bytes(jws).strip()
    pieces = text.split(b".")
    if len(pieces) != 3 or pieces[1] != b"":
        raise SignatureError(path, "not a detached compact JWS (<header>..<signature>)")
    try:
        header = orjson.loads(b64url_decode(pieces[0]))
        signature = b64url_decode(pieces[2])
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise SignatureError(path, "JWS header or signature is not valid base64url JSON") from exc
    if not isinstance(header, dict):
        raise SignatureError(path, "JWS header is not an object")
    if header.get("b64") is not False or header.get("crit") != ["b64"]:
        raise SignatureError(path, 'JWS must use an unencoded payload ("b64":false, "crit":["b64"])')
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS:
        raise SignatureError(path, f"JWS algorithm {alg!r} is not accepted")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise SignatureError(path, f"JWS key id {kid!r} is not among the trusted keys")
    if alg_of(key) != alg:
        raise SignatureError(path, f"JWS algorithm {alg!r} does not match the key type")
    if not _verify_raw(key, signature, [pieces[0] + b".", payload], der=False):
        raise SignatureError(path, "JWS signature does not verify")
    return str(kid)


def verify_blob_sig(
    sig_b64: bytes, payload: Buffer, keys: TrustedKeys, path: str = "", sha256: bytes | None = None
) -> str:
    """Verify a cosign-style ``.sig`` (base64 DER ECDSA or raw Ed25519) against any trusted key.

    ``sha256`` is the payload's SHA-256 when the caller computed it already (for its digest check)."""
    try:
        signature = base64.b64decode(bytes(sig_b64).strip(), validate=True)
    except ValueError as exc:
        raise SignatureError(path, ".sig is not base64") from exc
    for key in keys:
        if _verify_raw(key, signature, [payload], der=True, sha256=sha256):
            return key_id(key)
    raise SignatureError(path, ".sig does not verify against any trusted key")


def jwks(keys: Iterable[PublicKey]) -> dict[str, list[dict[str, str]]]:
    """A JWKS document for public keys, each with ``kid``, ``alg`` and ``use``."""
    out = []
    for k in keys:
        jwk = public_jwk(k)
        out.append({**jwk, "kid": thumbprint(jwk), "alg": alg_of(k), "use": "sig"})
    return {"keys": out}
