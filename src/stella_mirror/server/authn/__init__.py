"""Authentication for the mirror server: Basic against per-domain htpasswd files, Bearer JWTs from the Authority.

:meth:`Authenticator.authenticate` is the one entry point; :class:`~stella_mirror.server.middleware.auth.AuthGate`
applies it to requests, :mod:`stella_mirror.server.visibility` to the domain lists.
"""

from stella_mirror.server.authn.authenticator import ANONYMOUS, Authenticator, AuthSettings
from stella_mirror.server.authn.failure import AuthFailure, Reason

__all__ = ["ANONYMOUS", "AuthFailure", "AuthSettings", "Authenticator", "Reason"]
