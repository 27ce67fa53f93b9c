"""Keys and signatures, checked against an independent JOSE implementation (jwcrypto)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from jwcrypto import jwk, jws

from stella_mirror.bundle import signing
from stella_mirror.errors import ConfigError, SignatureError


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_kid_is_rfc7638_thumbprint(alg: str) -> None:
    key = signing.generate(alg)
    theirs = jwk.JWK.from_pem(key.public_pem())
    assert key.kid == theirs.thumbprint()


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_detached_unencoded_jws_verifies_with_jwcrypto(alg: str) -> None:
    key = signing.generate(alg)
    payload = b'{"hello":"world"}\n' * 1000
    compact = key.sign_detached_jws(payload).decode()
    header_b64, empty, sig_b64 = compact.split(".")
    assert empty == ""
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    assert header == {"alg": alg, "b64": False, "crit": ["b64"], "kid": key.kid}
    token = jws.JWS()
    token.deserialize(json.dumps({"protected": header_b64, "signature": sig_b64, "payload": payload.decode()}))
    token.verify(jwk.JWK.from_pem(key.public_pem()), alg=alg)  # raises on failure
    kid = signing.verify_detached_jws(compact.encode(), payload, signing.TrustedKeys([key.public]))
    assert kid == key.kid


def test_jws_refuses_other_payload_other_key_and_encoded_form() -> None:
    key, other = signing.generate(), signing.generate()
    compact = key.sign_detached_jws(b"payload")
    trusted = signing.TrustedKeys([key.public])
    with pytest.raises(SignatureError, match="does not verify"):
        signing.verify_detached_jws(compact, b"payloae", trusted)
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        signing.verify_detached_jws(compact, b"payload", signing.TrustedKeys([other.public]))
    attached = compact.replace(b"..", b".cGF5bG9hZA.")
    with pytest.raises(SignatureError, match="detached"):
        signing.verify_detached_jws(attached, b"payload", trusted)
    with pytest.raises(SignatureError):
        signing.verify_detached_jws(b"garbage", b"payload", trusted)


def test_blob_sig_is_der_ecdsa() -> None:
    key = signing.generate()
    sig = key.sign_blob_b64(b"data")
    der = base64.b64decode(sig)
    assert der[0] == 0x30  # an ASN.1 SEQUENCE (r, s): what openssl and cosign expect
    trusted = signing.TrustedKeys([key.public])
    assert signing.verify_blob_sig(sig, b"data", trusted) == key.kid
    with pytest.raises(SignatureError):
        signing.verify_blob_sig(sig, b"datb", trusted)
    with pytest.raises(SignatureError, match="base64"):
        signing.verify_blob_sig(b"%%%", b"data", trusted)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_blob_sig_with_the_callers_sha256(alg: str) -> None:
    """verify reuses the digest check's SHA-256 for an ECDSA .sig; EdDSA signs the bytes themselves."""
    key = signing.generate(alg)
    sig = key.sign_blob_b64(b"data")
    trusted = signing.TrustedKeys([key.public])
    assert signing.verify_blob_sig(sig, b"data", trusted, "f.sig", hashlib.sha256(b"data").digest()) == key.kid
    if alg == "ES256":  # the given hash is what is checked
        with pytest.raises(SignatureError):
            signing.verify_blob_sig(sig, b"data", trusted, "f.sig", hashlib.sha256(b"datb").digest())
    else:  # the given hash is not used: the bytes are
        with pytest.raises(SignatureError):
            signing.verify_blob_sig(sig, b"datb", trusted, "f.sig", hashlib.sha256(b"data").digest())


def test_jwks_round_trip_and_bad_keys() -> None:
    key = signing.generate("EdDSA")
    doc = signing.jwks([key.public])
    assert doc["keys"][0]["kid"] == key.kid and doc["keys"][0]["alg"] == "EdDSA"
    assert signing.TrustedKeys.from_jwks(doc).kids == [key.kid]
    with pytest.raises(ConfigError):
        signing.load_private_pem(b"not a key", "k.pem")
    with pytest.raises(ConfigError):
        signing.generate("RS256")
    with pytest.raises(ConfigError):
        signing.TrustedKeys([])


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_one_pass_signing_matches_the_separate_signatures(alg: str) -> None:
    key = signing.generate(alg)
    chunks = [b'{"a":', b"1" * 5000, b"}\n"]
    payload = b"".join(chunks)
    jws_bytes, sig = key.sign_jws_and_blob(iter(chunks))
    trusted = signing.TrustedKeys([key.public])
    assert signing.verify_detached_jws(jws_bytes, payload, trusted) == key.kid
    assert signing.verify_blob_sig(sig, payload, trusted) == key.kid
    assert jws_bytes.split(b".")[0] == key.sign_detached_jws(payload).split(b".")[0]
    with pytest.raises(SignatureError):
        signing.verify_blob_sig(sig, payload + b" ", trusted)
