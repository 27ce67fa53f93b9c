"""What the entry points check about files before they start, one function per process that loads them.

- :func:`serve_checks` — ``serve`` at start and on every reload (through ``server.runner.preflight``) and
  ``config check``: the TLS files ``serve`` loads (when it terminates TLS), and each served product's export root.
- :func:`gateway_checks` — ``gateway render`` and ``deploy/tools/validate-profiles.sh``: every domain's TLS files,
  which the gateway's nginx loads.

A file nginx or the server would refuse — missing, unreadable, a key that is not its certificate's, a certificate
that does not cover its domain's host names — is a :class:`~stella_mirror.errors.ConfigError` (exit 3) naming the
configuration key and the file. A certificate that expired or expires within 30 days, and an export root that is
not a directory, are warnings: returned for the caller to print or log (the server must not refuse to start over
them — it would turn a renewal reminder into an outage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from stella_mirror.config import MirrorConfig
from stella_mirror.errors import ConfigError
from stella_mirror.ops.certs import Loader, TlsFinding, check_pair, tls_pairs
from stella_mirror.server.state import NOT_CONFIGURED

log = logging.getLogger("stella_mirror.preflight")


def tls_findings(
    config: MirrorConfig, loader: Loader, resolve: Callable[[Path], Path | None] = lambda p: p
) -> list[TlsFinding]:
    """Every problem with the TLS files ``loader`` loads, fatal ones first (see :mod:`stella_mirror.ops.certs`)."""
    now = datetime.now(UTC)
    found = [f for pair in tls_pairs(config, loader) for f in check_pair(pair, now, resolve)]
    return sorted(found, key=lambda f: not f.fatal)


def _tls(config: MirrorConfig, loader: Loader) -> list[str]:
    found = tls_findings(config, loader)
    if found and found[0].fatal:
        raise ConfigError(found[0].key_path, f"{found[0].file}: {found[0].message}")
    return [f"certificate {f}" for f in found]


def export_root_problems(config: MirrorConfig, service: str | None = None) -> list[str]:
    """Runbook §7's line for each served product whose configured export root is not a directory (an unset root is
    reported by the server itself, with the same line)."""
    svc = service or config.mirror.service
    out = []
    exc_key = "excititor.mirror.exportRoot"
    if config.excititor.mirror.export_root is None:
        exc_key = "excititor.artifacts.filesystem.root"
    roots = (
        ("concelier", config.concelier.mirror, config.concelier.mirror.export_root, "concelier.mirror.exportRoot"),
        ("excititor", config.excititor.mirror, config.excititor.export_root, exc_key),
    )
    for product, mirror, root, key in roots:
        if mirror.enabled and svc in ("all", product) and root is not None and not root.is_dir():
            out.append(f"{product}: {NOT_CONFIGURED}: {key} {root} is not a directory")
    return out


def serve_checks(config: MirrorConfig, service: str | None = None) -> list[str]:
    """``serve``'s checks: raises :class:`ConfigError` for a TLS file it would refuse; returns the warnings."""
    return _tls(config, "serve") + export_root_problems(config, service)


def gateway_checks(config: MirrorConfig) -> list[str]:
    """``gateway render``'s checks: raises :class:`ConfigError` for a TLS file nginx would refuse; returns the
    warnings."""
    return _tls(config, "gateway")


def log_serve_checks(config: MirrorConfig, service: str | None = None) -> None:
    """:func:`serve_checks`, its warnings logged (export roots on the product's logger, as the server logs an unset
    one, so runbook §7's alert sees both)."""
    for line in serve_checks(config, service):
        product, sep, message = line.partition(": ")
        if sep and message.startswith(NOT_CONFIGURED):
            logging.getLogger(f"stella_mirror.{product}").error(message)
        else:
            log.warning(line)
