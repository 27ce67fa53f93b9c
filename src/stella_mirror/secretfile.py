"""Secrets are read from files (runbook §2: ``/run/secrets``), never taken from the environment or a command line,
and never put into a message: errors name the configuration key and the file, not what it holds."""

from __future__ import annotations

from pathlib import Path

from stella_mirror.errors import ConfigError


def read_secret(path: Path, key: str) -> str:
    """The secret in ``path`` (surrounding white space stripped); :class:`ConfigError` naming ``key`` when the file
    cannot be read or is empty."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigError(key, f"{path} is empty")
    return value
