"""Credentials out of anything we print or log: URLs and DSNs (``redis://:password@host``, ``…?password=…``).

One rule for every output — ``config check`` (YAML and JSON), log lines, error messages: the user-info part of
a URL (everything before the *last* ``@`` of the authority, so an unencoded ``@`` in a password is covered) and
the value of every query parameter whose name says it is a secret are replaced by ``***``. Parsing is by
hand on purpose: ``urllib.parse`` splits an unencoded ``@``, ``/`` or ``?`` inside a password differently from
the libraries that use the URL, and a redactor must not depend on the URL being well-formed.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

_SECRET_PARAM = re.compile(
    r"(?i)([?&;][^=&#;?]*(?:pass|pwd|secret|token|key|auth|cred|signature|sig)[^=&#;?]*=)[^&#;]*"
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_url(url: str) -> str:
    """``url`` with its password, user name and secret query parameters replaced by ``***``.

    >>> redact_url("redis://:p@ss@redis:6379/0?password=x&db=0")
    'redis://***@redis:6379/0?password=***&db=0'
    """
    text = _SECRET_PARAM.sub(rf"\g<1>{MASK}", url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    # The authority ends at the first "/" after its last "@"; a query holds no "@" any more (masked above when
    # secret), so the last "@" before the path is the end of the user-info, whatever the password contains.
    at = rest.rfind("@")
    if at < 0:
        return text
    return f"{scheme}://{MASK}@{rest[at + 1 :]}"


def redact_text(text: str) -> str:
    """Every URL inside a free-form message (an exception's text, a log line) redacted by :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_data(data: Any) -> Any:
    """A copy of plain data (dicts, lists, strings) with every URL-looking string redacted."""
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_data(v) for v in data]
    if isinstance(data, str) and "://" in data:
        return redact_text(data)
    return data
