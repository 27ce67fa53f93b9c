"""HTTP Basic credentials checked against an htpasswd table, with a short memory of recent verdicts.

bcrypt is deliberately slow (milliseconds at ``htpasswd -B``'s default cost 5, ~250 ms at cost 12), and a
mirror client sends the same credentials with every request, so a successful check is remembered for
``authority.basicCacheTtlSeconds``; a failed one for :data:`FAILURE_TTL` seconds, so a client repeating a wrong
password (or a flood of one) costs one bcrypt per file and window, not one per request. The cache never holds a
password: an entry is keyed by a MAC (keyed BLAKE2b, random process key) of the htpasswd file and the credential
as sent, so a hit is one hash and one dictionary lookup, and entries mean nothing outside this process. An
entry also records the htpasswd hash the password was checked against (none for an unknown user), so it is
useless as soon as the user's line changes.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import bcrypt

from stella_mirror.server.authn.failure import AuthFailure
from stella_mirror.server.authn.htpasswd import HtpasswdTable
from stella_mirror.server.context import Principal

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


FAILURE_TTL = 10.0
"""Seconds a failed check is remembered."""

FAILED = Principal(name="", method="anonymous")
"""What :meth:`VerdictCache.hit` returns for a remembered failure."""


class VerdictCache:
    """Recent bcrypt verdicts, keyed so that no secret is stored. Thread-safe and bounded.

    An entry is keyed by a keyed BLAKE2b of the htpasswd file and the exact ``Basic`` value the client sent, so a
    hit needs neither base64 decoding nor parsing. It holds the verdict (the principal, or :data:`FAILED`) and the
    hash the password was checked against; it only counts while that user's line still carries the same hash.
    """

    def __init__(
        self,
        ttl_seconds: float,
        failure_ttl_seconds: float = FAILURE_TTL,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._failure_ttl = failure_ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, str, Principal, bytes | None]] = OrderedDict()
        """proof → (expiry, user, verdict, stored hash or None for a user not in the file)."""
        self._lock = threading.Lock()

    def _proof(self, realm: str, encoded: str) -> bytes:
        return hashlib.blake2b(f"{realm}\0{encoded}".encode(), key=self._key, digest_size=32).digest()

    def hit(self, realm: str, encoded: str, users: Mapping[str, bytes]) -> Principal | None:
        """The verdict on the ``Basic`` value ``encoded`` for ``realm`` (the htpasswd file) when one is remembered
        and the user's hash in ``users`` (the current table) is still the one it was checked against: the
        principal, or :data:`FAILED`. None when a bcrypt check has to decide."""
        # No lock on this path: a dict lookup is atomic under the GIL and entries are immutable tuples.
        proof = self._proof(realm, encoded)
        entry = self._entries.get(proof)
        if entry is None:
            return None
        expiry, user, verdict, stored = entry
        if expiry <= self._clock() or users.get(user) != stored:
            with self._lock:
                self._entries.pop(proof, None)
            return None
        return verdict

    def remember(self, realm: str, encoded: str, user: str, verdict: Principal, stored_hash: bytes | None) -> None:
        """Record the verdict of a bcrypt check of ``encoded`` against ``stored_hash`` (None: unknown user)."""
        ttl = self._failure_ttl if verdict is FAILED else self._ttl
        if ttl <= 0:
            return
        proof = self._proof(realm, encoded)
        with self._lock:
            self._entries[proof] = (self._clock() + ttl, user, verdict, stored_hash)
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
