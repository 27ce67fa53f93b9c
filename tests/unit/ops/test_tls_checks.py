"""TLS file checks (ops/certs.py, preflight.py): the key must be its certificate's, the certificate must cover the
domain's host names, expiry within 30 days warns — each finding naming the configuration key and the file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stella_mirror.config import load_config
from stella_mirror.errors import ConfigError
from stella_mirror.ops.certs import TlsPair, check_pair, tls_pairs
from stella_mirror.preflight import export_root_problems, gateway_checks, serve_checks

NOW = datetime.now(UTC)


def make_pair(directory: Path, name: str, hosts: list[str], days: int = 90) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=400))
        .not_valid_after(NOW + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_a_matching_pair_covering_its_host_has_no_finding(tmp_path: Path) -> None:
    crt, key = make_pair(tmp_path, "p", ["p.example", "*.wild.example"])
    assert check_pair(TlsPair("mirror.domains.0.tls", crt, key, ("p.example", "a.wild.example")), NOW) == []


def test_a_key_of_another_certificate_is_fatal_and_named(tmp_path: Path) -> None:
    crt, _ = make_pair(tmp_path, "p", ["p.example"])
    _, other = make_pair(tmp_path, "q", ["p.example"])
    [finding] = check_pair(TlsPair("mirror.domains.0.tls", crt, other, ("p.example",)), NOW)
    assert finding.fatal and finding.key_path == "mirror.domains.0.tls.keyFile" and finding.file == other
    assert finding.message == f"does not match the certificate {crt}"


def test_missing_unreadable_and_non_pem_files_are_fatal(tmp_path: Path) -> None:
    crt, key = make_pair(tmp_path, "p", ["p.example"])
    found = check_pair(TlsPair("mirror.tls", crt, tmp_path / "p.kye", ()), NOW)
    assert [(f.key_path, f.fatal) for f in found] == [("mirror.tls.keyFile", True)]
    assert "cannot read key: No such file or directory" in found[0].message
    (tmp_path / "junk").write_text("junk\n")
    found = check_pair(TlsPair("mirror.tls", tmp_path / "junk", tmp_path / "junk", ()), NOW)
    assert [str(f) for f in found] == [f"mirror.tls.certFile {tmp_path / 'junk'}: not a PEM certificate",
                                       f"mirror.tls.keyFile {tmp_path / 'junk'}: not an unencrypted PEM private key"]
    found = check_pair(TlsPair("mirror.tls", crt, key, ()), NOW, resolve=lambda p: None)
    assert [f.message for f in found] == ["no such file where it is loaded"] * 2


def test_host_coverage_is_fatal_expiry_warns(tmp_path: Path) -> None:
    crt, key = make_pair(tmp_path, "p", ["other.example"], days=10)
    found = check_pair(TlsPair("mirror.domains.1.tls", crt, key, ("p.example",)), NOW)
    assert [(f.fatal, f.message.split(" (")[0].split(" on ")[0]) for f in found] == [
        (True, "does not cover host p.example"), (False, "expires")]
    assert "within 30 days: renew it" in found[1].message
    crt, key = make_pair(tmp_path, "old", ["p.example"], days=-1)
    [expired] = check_pair(TlsPair("mirror.domains.1.tls", crt, key, ("p.example",)), NOW)
    assert not expired.fatal and expired.message.startswith("expired on ")


def _site_env(tmp_path: Path, crt: Path, key: Path, terminate: bool) -> dict[str, str]:
    return {"MIRROR__DOMAINS__0__ID": "primary", "MIRROR__DOMAINS__0__HOSTNAMES__0": "p.example",
            "MIRROR__DOMAINS__0__TLS__CERTFILE": str(crt), "MIRROR__DOMAINS__0__TLS__KEYFILE": str(key),
            "CONCELIER__MIRROR__DOMAINS__0__ID": "primary", "EXCITITOR__MIRROR__DOMAINS__0__ID": "primary",
            "CONCELIER__MIRROR__EXPORTROOT": str(tmp_path), "EXCITITOR__MIRROR__EXPORTROOT": str(tmp_path),
            "MIRROR__GATEWAY__TERMINATETLS": str(terminate).lower()}


def test_who_loads_the_files_is_who_checks_them(tmp_path: Path) -> None:
    crt, key = make_pair(tmp_path, "p", ["p.example"], days=20)
    dflt_crt, dflt_key = make_pair(tmp_path, "d", ["localhost"])
    gw = load_config(None, _site_env(tmp_path, crt, tmp_path / "p.kye", terminate=True))
    assert [p.key_path for p in tls_pairs(gw, "gateway")] == ["mirror.domains.0.tls"]  # once for both products
    assert tls_pairs(gw, "serve") == []  # serve speaks plain HTTP behind the gateway: it loads none of them
    with pytest.raises(ConfigError) as info:
        gateway_checks(gw)
    assert info.value.key_path == "mirror.domains.0.tls.keyFile" and str(tmp_path / "p.kye") in info.value.reason
    assert serve_checks(gw) == []
    env = _site_env(tmp_path, crt, key, terminate=False) | {"MIRROR__TLS__CERTFILE": str(dflt_crt),
                                                            "MIRROR__TLS__KEYFILE": str(dflt_key)}
    [warning] = serve_checks(load_config(None, env))
    assert warning.startswith(f"certificate mirror.domains.0.tls.certFile {crt}: expires on ")
    with pytest.raises(ConfigError) as info:
        serve_checks(load_config(None, env | {"MIRROR__TLS__KEYFILE": str(key)}))
    assert info.value.key_path == "mirror.tls.keyFile" and "does not match the certificate" in info.value.reason


def test_a_missing_export_root_gets_the_runbook_line(tmp_path: Path) -> None:
    env = {"CONCELIER__MIRROR__EXPORTROOT": str(tmp_path / "no-such"), "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT":
           str(tmp_path)}
    cfg = load_config(None, env)
    assert export_root_problems(cfg) == [
        f"concelier: Mirror export root is not configured: concelier.mirror.exportRoot {tmp_path / 'no-such'} "
        "is not a directory"]
    assert export_root_problems(cfg, "excititor") == []
