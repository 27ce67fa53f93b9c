"""HTTP Basic credentials checked against an htpasswd table, with a cache of recent successes.

bcrypt is deliberately slow (milliseconds at ``htpasswd -B``'s default cost 5, ~250 ms at cost 12), and a
mirror client sends the same credentials with every request, so a successful check is remembered for a
short time. The cache never holds a password: an entry is HMAC(process key, domain, user, password, stored
hash) and an expiry, so a hit is one HMAC and one dictionary lookup (a wrong password simply finds no
entry). The process key is random, so entries mean nothing outside this process and cannot be guessed.
Including the stored hash makes an entry useless as soon as the user's line in the htpasswd file changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import bcrypt

from stella_mirror.server.authn.failure import AuthFailure
from stella_mirror.server.authn.htpasswd import HtpasswdTable

MAX_CREDENTIALS_LENGTH = 4096
"""Longer Basic values are refused before decoding (bcrypt only looks at 72 bytes anyway)."""

BCRYPT_MAX_BYTES = 72

_CONTROL = re.compile("[\x00-\x1f\x7f]")
"""Control characters, refused in user names."""

MALFORMED_DETAIL = "the Basic credentials are not base64 of 'user:password'"
REJECTED_DETAIL = "invalid user name or password"


@dataclass(frozen=True)
class BasicCredentials:
    """A decoded Basic credential. The password never appears in ``repr``."""

    user: str
    password: str = field(repr=False)


def parse_basic(encoded: str) -> BasicCredentials:
    """Decode the part of an ``Authorization: Basic`` header after the scheme.

    Bad base64, a missing ``:``, non-UTF-8 bytes, control characters or an empty user name raise
    :class:`AuthFailure` 401 ``malformed``.
    """
    encoded = encoded.strip()
    if not encoded or len(encoded) > MAX_CREDENTIALS_LENGTH:
        raise AuthFailure(401, "malformed", MALFORMED_DETAIL)
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise AuthFailure(401, "malformed", MALFORMED_DETAIL) from None
    user, sep, password = text.partition(":")
    if not sep or not user or _CONTROL.search(user):
        raise AuthFailure(401, "malformed", MALFORMED_DETAIL)
    return BasicCredentials(user=user, password=password)


class SuccessCache:
    """Recently verified credentials, keyed so that no secret is stored. Thread-safe and bounded."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        key = secrets.token_bytes(32)  # shorter than SHA-256's 64-byte block: used as is, zero-padded
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")))
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        """proof → expiry."""
        self._lock = threading.Lock()

    def _mac(self, *parts: bytes) -> bytes:
        # HMAC-SHA256 (RFC 2104) of the length-prefixed parts, so ("a:b", "c") and ("a", "b:c") can never
        # produce the same input. This runs on every authenticated request, so the keyed inner and outer
        # hash states are computed once and copied: about a third of the cost of hmac.new or hmac.digest,
        # which redo the key schedule every time.
        inner = self._inner.copy()
        inner.update(b"".join([len(part).to_bytes(4, "big") + part for part in parts]))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def _proof(self, realm: str, creds: BasicCredentials, stored_hash: bytes) -> bytes:
        return self._mac(b"proof", realm.encode(), creds.user.encode(), creds.password.encode(), stored_hash)

    def hit(self, realm: str, creds: BasicCredentials, stored_hash: bytes) -> bool:
        """Whether these exact credentials were verified for ``realm`` within the TTL."""
        if self._ttl <= 0:
            return False
        proof = self._proof(realm, creds, stored_hash)
        now = self._clock()
        with self._lock:
            expiry = self._entries.get(proof)
            if expiry is None:
                return False
            if expiry <= now:
                del self._entries[proof]
                return False
            return True

    def remember(self, realm: str, creds: BasicCredentials, stored_hash: bytes) -> None:
        """Record a successful bcrypt check."""
        if self._ttl <= 0:
            return
        proof = self._proof(realm, creds, stored_hash)
        with self._lock:
            self._entries[proof] = self._clock() + self._ttl
            self._entries.move_to_end(proof)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (on reload)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def check_password(table: HtpasswdTable, creds: BasicCredentials) -> bool:
    """bcrypt-check ``creds`` against ``table`` (blocking, slow by design).

    Unknown users are checked against the table's dummy hash so both paths take the same time.
    """
    stored = table.users.get(creds.user)
    # bcrypt only ever uses the first 72 bytes; htpasswd truncates the same way, and bcrypt>=5 refuses
    # longer input instead of truncating, so truncate here to accept what htpasswd -B accepts.
    password = creds.password.encode("utf-8")[:BCRYPT_MAX_BYTES]
    try:
        if stored is None:
            bcrypt.checkpw(password, table.dummy_hash)
            return False
        return bcrypt.checkpw(password, stored)
    except ValueError:  # input bcrypt refuses (e.g. a NUL byte): simply not a match
        return False
