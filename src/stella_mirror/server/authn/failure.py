"""The one exception authentication raises: what to answer, and a stable reason for metrics."""

from __future__ import annotations

from typing import Literal

Reason = Literal[
    "missing",
    "malformed",
    "bad-credentials",
    "expired",
    "not-yet-valid",
    "bad-issuer",
    "bad-audience",
    "bad-signature",
    "insufficient-scope",
]
"""Stable slugs, safe as metric labels: a small fixed set, never derived from request data."""


class AuthFailure(Exception):
    """A request's credentials are missing or rejected.

    ``status`` is 401 (authenticate, then retry) or 403 (authenticated but not allowed); ``reason`` is a
    :data:`Reason` slug for metrics and logs; ``challenge`` is the ``WWW-Authenticate`` value (filled in by
    the :class:`~stella_mirror.server.authn.authenticator.Authenticator`, which knows the domain);
    ``detail`` is a client-facing sentence. None of them ever carries a password, token or hash.
    """

    def __init__(self, status: int, reason: Reason, detail: str, challenge: str = "") -> None:
        self.status = status
        self.reason: Reason = reason
        self.detail = detail
        self.challenge = challenge
        super().__init__(f"{status} {reason}: {detail}")

    def with_challenge(self, challenge: str) -> AuthFailure:
        """A copy of this failure carrying ``challenge``."""
        return AuthFailure(self.status, self.reason, self.detail, challenge)
