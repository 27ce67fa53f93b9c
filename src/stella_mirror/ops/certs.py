"""TLS files as the processes that load them will see them: every certificate with its key, read and compared
(the key must belong to the certificate), the certificate covering the domain's host names, and its expiry
(runbook §7: renew 30 days ahead).

One implementation for every check that needs it — ``serve``'s start and reloads, ``config check``, ``gateway
render`` (:mod:`stella_mirror.preflight`) and ``deploy/tools/validate-profiles.sh`` — so they cannot disagree
with each other or with nginx and the server, which refuse the same files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from stella_mirror.config import MirrorConfig

RENEW_WITHIN = timedelta(days=30)

Loader = Literal["serve", "gateway"]
"""Who loads the files: ``serve`` (when it terminates TLS: ``mirror.tls`` and the domains' files) or the gateway
(every domain's files, whatever ``terminateTls`` says: ``gateway render`` writes them into nginx.conf)."""


@dataclass(frozen=True)
class TlsPair:
    """A certificate chain and its key as configured, with the host names it must cover."""

    key_path: str
    """Where the configuration writes it: ``mirror.tls``, ``mirror.domains.0.tls``,
    ``concelier.mirror.domains.1.tls``."""
    cert_file: Path
    key_file: Path
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsFinding:
    """One problem with one file of a :class:`TlsPair`. ``fatal``: nginx or the server would refuse the file, or
    clients would refuse the certificate for a host; otherwise (expiry ahead or passed) a warning."""

    key_path: str
    """The configuration key of the file (``….tls.certFile`` / ``….tls.keyFile``)."""
    file: Path
    """The file as the configuration writes it."""
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.key_path} {self.file}: {self.message}"


@dataclass
class _Pairs:
    by_files: dict[tuple[Path, Path], TlsPair] = field(default_factory=dict)

    def add(self, key_path: str, cert: Path | None, key: Path | None, hosts: tuple[str, ...]) -> None:
        if cert is None or key is None:
            return
        old = self.by_files.get((cert, key))
        if old is None:
            self.by_files[(cert, key)] = TlsPair(key_path, cert, key, hosts)
        else:
            merged = old.hosts + tuple(h for h in hosts if h not in old.hosts)
            self.by_files[(cert, key)] = TlsPair(old.key_path, cert, key, merged)


def tls_pairs(config: MirrorConfig, loader: Loader) -> list[TlsPair]:
    """Every certificate/key pair ``loader`` loads for ``config``, once each, with the host names it serves."""
    pairs = _Pairs()
    if loader == "serve":
        if not config.tls_enabled():
            return []
        pairs.add("mirror.tls", config.mirror.tls.cert_file, config.mirror.tls.key_file, ())
    for product, mirror in (("concelier", config.concelier.mirror), ("excititor", config.excititor.mirror)):
        if not mirror.enabled:
            continue
        for i, dom in enumerate(mirror.domains):
            pairs.add(f"{config.site_key(product, i)}.tls", dom.tls.cert_file, dom.tls.key_file, dom.hostnames)
    return list(pairs.by_files.values())


def _covers(pattern: str, host: str) -> bool:
    """RFC 6125 matching of one DNS name: exact, or a ``*.`` wildcard standing for exactly one left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def dns_names(cert: x509.Certificate) -> list[str]:
    """The certificate's subjectAltName DNS names (clients ignore the subject CN when matching host names)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def days_left(cert: x509.Certificate, now: datetime) -> float:
    """Days until the certificate expires (negative once it has)."""
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_pair(
    pair: TlsPair,
    now: datetime,
    resolve: Callable[[Path], Path | None] = lambda p: p,
    renew_within: timedelta = RENEW_WITHIN,
) -> list[TlsFinding]:
    """What is wrong with ``pair``: a file missing or unreadable (``resolve`` maps a configured path to where this
    process reads it — a container's volume — or None when it has no such file), not PEM, an encrypted key, a key
    that is not the certificate's, a host name the certificate does not cover (fatal); an expired certificate or
    one expiring within ``renew_within`` (warnings). Empty when nothing is."""
    cert_key, key_key = f"{pair.key_path}.certFile", f"{pair.key_path}.keyFile"
    cert_local, key_local = resolve(pair.cert_file), resolve(pair.key_file)
    found: list[TlsFinding] = []
    cert: x509.Certificate | None = None
    if cert_local is None:
        found.append(TlsFinding(cert_key, pair.cert_file, "no such file where it is loaded"))
    else:
        try:
            chain = x509.load_pem_x509_certificates(cert_local.read_bytes())
            cert = chain[0]
        except OSError as exc:
            found.append(TlsFinding(cert_key, pair.cert_file, f"cannot read certificate: {exc.strerror or exc}"))
        except ValueError:
            found.append(TlsFinding(cert_key, pair.cert_file, "not a PEM certificate"))
    if key_local is None:
        found.append(TlsFinding(key_key, pair.key_file, "no such file where it is loaded"))
    else:
        try:
            key = serialization.load_pem_private_key(key_local.read_bytes(), password=None)
        except OSError as exc:
            found.append(TlsFinding(key_key, pair.key_file, f"cannot read key: {exc.strerror or exc}"))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            found.append(TlsFinding(key_key, pair.key_file, "not an unencrypted PEM private key"))
        else:
            if cert is not None and _spki(key.public_key()) != _spki(cert.public_key()):
                found.append(TlsFinding(key_key, pair.key_file, f"does not match the certificate {pair.cert_file}"))
    if cert is None:
        return found
    names = dns_names(cert)
    for host in pair.hosts:
        if not any(_covers(name, host) for name in names):
            listed = ", ".join(names) or "none"
            found.append(
                TlsFinding(cert_key, pair.cert_file, f"does not cover host {host} (subjectAltName DNS names: {listed})")
            )
    expires = cert.not_valid_after_utc
    if expires <= now:
        found.append(TlsFinding(cert_key, pair.cert_file, f"expired on {expires:%Y-%m-%d %H:%M} UTC", fatal=False))
    elif expires - now <= renew_within:
        found.append(
            TlsFinding(
                cert_key,
                pair.cert_file,
                f"expires on {expires:%Y-%m-%d %H:%M} UTC, within {renew_within.days} days: renew it",
                fatal=False,
            )
        )
    return found
