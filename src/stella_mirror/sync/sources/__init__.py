"""Sync sources, one module each, behind :class:`~stella_mirror.sync.sources.interface.Source`.

:func:`open_source` picks the module by the URL: ``s3://bucket/prefix``, ``rsync://host/module/path`` or
``host:path`` (the real rsync program), ``https://mirror`` (an upstream stella-mirror), ``file://dir`` or
a directory path, and a ``.tar`` offline kit (a path or ``file://``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from stella_mirror.errors import ConfigError
from stella_mirror.sync.config import SourceOptions, check_source_url
from stella_mirror.sync.sources.interface import Source

_REMOTE_SHELL = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:(?!//)")


def redact_url(url: str) -> str:
    """``url`` without credentials or query string: what logs, history and the status file may show."""
    parts = urlsplit(url)
    if not parts.scheme or _REMOTE_SHELL.match(url):
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def open_source(url: str, options: SourceOptions) -> Source:
    """The source for ``url`` (ConfigError naming ``source`` when no module understands it)."""
    try:
        check_source_url(url)
    except ValueError as exc:
        raise ConfigError("source", str(exc)) from None
    safe = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from stella_mirror.sync.sources.s3 import S3Source

        return S3Source(parts.netloc, parts.path.strip("/"), options, safe)
    if parts.scheme in ("http", "https"):
        from stella_mirror.sync.sources.http import HTTPSource

        return HTTPSource(url, options, safe)
    if parts.scheme == "rsync" or _REMOTE_SHELL.match(url):
        from stella_mirror.sync.sources.rsync import RsyncSource

        return RsyncSource(url, options, safe)
    path = Path(parts.path if parts.scheme == "file" else url)
    if path.is_file():
        from stella_mirror.sync.sources.kit import KitSource

        return KitSource(path, safe, options)
    from stella_mirror.sync.sources.file import FileSource

    return FileSource(path, safe, options)
