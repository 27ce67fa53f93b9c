"""Certificate checks for deployment profiles: does a domain's certificate cover its host names, and does it stay
valid long enough (``deploy/tools/validate-profiles.sh`` reports one expiring within 30 days, runbook §7)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

RENEW_WITHIN = timedelta(days=30)


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


def certificate_problems(
    path: Path, hosts: list[str], now: datetime, renew_within: timedelta = RENEW_WITHIN
) -> list[str]:
    """What is wrong with the PEM certificate at ``path`` for ``hosts``: unreadable, a host not covered by its
    subjectAltName, expired or expiring within ``renew_within``. Empty when nothing is."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        return [f"cannot read certificate: {exc.strerror or exc}"]
    except ValueError:
        return ["not a PEM certificate"]
    problems = []
    names = dns_names(cert)
    for host in hosts:
        if not any(_covers(name, host) for name in names):
            listed = ", ".join(names) or "none"
            problems.append(f"does not cover host {host} (subjectAltName DNS names: {listed})")
    expires = cert.not_valid_after_utc
    if expires <= now:
        problems.append(f"expired on {expires:%Y-%m-%d %H:%M} UTC")
    elif expires - now <= renew_within:
        problems.append(f"expires on {expires:%Y-%m-%d %H:%M} UTC, within {renew_within.days} days: renew it")
    return problems
