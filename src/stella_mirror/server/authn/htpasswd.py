"""Reading ``htpasswd -B`` files: one ``user:bcrypt-hash`` per line.

Only bcrypt (``$2y$``/``$2b$``/``$2a$``) is accepted. The other formats ``htpasswd`` can write — ``{SHA}``
(unsalted SHA-1), ``$apr1$`` (MD5), crypt(3) and plain text — are weak or unverifiable here, so a file
holding any of them is refused at load time with a :class:`~stella_mirror.errors.ConfigError` naming the
file and line, never the hash. Comments (``#``) and blank lines are ignored.

A user name that appears twice is refused as well: Apache uses the first line, other tools the last, and an
operator rotating a password by appending a line would otherwise silently keep the old one working.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import bcrypt

from stella_mirror.errors import ConfigError

_BCRYPT = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")

MAX_FILE_BYTES = 16 * 1024 * 1024
"""A bound on what we read; real htpasswd files are a few kilobytes."""


def _describe_unsupported(hash_value: bytes) -> str:
    """Name the kind of a non-bcrypt hash without quoting it."""
    if hash_value.startswith(b"{SHA}"):
        return "an unsalted SHA-1 ({SHA}) hash"
    if hash_value.startswith(b"$apr1$"):
        return "an APR1-MD5 ($apr1$) hash"
    if hash_value.startswith((b"$1$", b"$5$", b"$6$", b"$y$")):
        return "a crypt(3) hash"
    if hash_value.startswith(b"$2"):
        return "a malformed bcrypt hash"
    return "a plain-text or DES-crypt password"


@dataclass(frozen=True)
class HtpasswdTable:
    """The users of one htpasswd file, with a dummy hash of the same cost for unknown users."""

    path: Path
    users: Mapping[str, bytes]
    dummy_hash: bytes = field(repr=False)
    """Checked against for user names not in the file, so a miss costs as much time as a hit."""

    def __repr__(self) -> str:  # never print the hashes
        return f"HtpasswdTable(path={str(self.path)!r}, users={len(self.users)})"


def parse_htpasswd(path: Path, data: bytes) -> HtpasswdTable:
    """Parse the bytes of an htpasswd file; ``path`` is used for error messages only."""
    users: dict[str, bytes] = {}
    first_line: dict[str, int] = {}
    costs: Counter[int] = Counter()
    for lineno, raw in enumerate(data.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        where = f"{path}:{lineno}"
        user_bytes, sep, hash_value = line.partition(b":")
        if not sep or not user_bytes:
            raise ConfigError(where, "not a 'user:hash' line")
        try:
            user = user_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(where, "user name is not UTF-8") from None
        match = _BCRYPT.match(hash_value)
        if match is None:
            raise ConfigError(
                where,
                f"user {user!r} has {_describe_unsupported(hash_value)}; only bcrypt is accepted (use htpasswd -B)",
            )
        if user in users:
            raise ConfigError(where, f"user {user!r} already defined on line {first_line[user]}")
        users[user] = hash_value
        first_line[user] = lineno
        costs[int(match.group(1))] += 1
    # The dummy hash uses the file's most common cost so an unknown user takes as long as a known one.
    cost = min(max(costs.most_common(1)[0][0] if costs else 5, 4), 31)
    dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
    return HtpasswdTable(path=path, users=MappingProxyType(users), dummy_hash=dummy)


def load_htpasswd(path: Path) -> HtpasswdTable:
    """Read and parse one htpasswd file; :class:`ConfigError` naming the file when unreadable or invalid."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read htpasswd file: {exc.strerror or exc.__class__.__name__}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(path), f"htpasswd file larger than {MAX_FILE_BYTES} bytes")
    return parse_htpasswd(path, data)
