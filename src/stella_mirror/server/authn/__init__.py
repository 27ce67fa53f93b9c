"""Authentication for the mirror server: Basic against per-domain htpasswd files, Bearer JWTs from the Authority.

:class:`Authenticator` is the one entry point; :class:`~stella_mirror.server.middleware.auth.AuthMiddleware`
applies it to requests.
"""

from stella_mirror.server.authn.authenticator import ANONYMOUS, Authenticator, AuthSettings
from stella_mirror.server.authn.failure import AuthFailure, Reason

__all__ = ["ANONYMOUS", "AuthFailure", "AuthSettings", "Authenticator", "Reason"]
