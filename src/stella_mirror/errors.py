"""The one exception hierarchy of stella-mirror.

Two roots, as in python-tuf: :class:`BundleError` for anything wrong with signed data we were handed
(signature, digest, expiry, rollback, malformed bundle) and :class:`SourceError` for anything wrong with
where data comes from (unreachable, HTTP status, truncated transfer, malformed input document).
:class:`ConfigError` covers invalid configuration. Every class carries the process exit code the CLI
uses, so the codes documented in README.md live in exactly one place.

Messages never contain secrets: callers pass paths and key names, never secret values.
"""

from __future__ import annotations


class StellaMirrorError(Exception):
    """Base of every error stella-mirror raises on purpose."""

    exit_code = 1
    kind = "error"


# --- configuration -------------------------------------------------------------------------------


class ConfigError(StellaMirrorError):
    """Invalid configuration; ``key_path`` names the offending key (e.g. ``concelier.mirror.domains.0.id``)."""

    exit_code = 3
    kind = "config"

    def __init__(self, key_path: str, reason: str) -> None:
        self.key_path = key_path
        self.reason = reason
        super().__init__(f"{key_path}: {reason}" if key_path else reason)


# --- signed data ---------------------------------------------------------------------------------


class BundleError(StellaMirrorError):
    """Signed data failed verification. ``path`` names the first failing file (relative to the export)."""

    exit_code = 14
    kind = "bundle"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class SignatureError(BundleError):
    """A JWS or .sig does not verify against any trusted key."""

    exit_code = 10
    kind = "signature"


class DigestError(BundleError):
    """A file's size or SHA-256 digest differs from what the signed metadata says."""

    exit_code = 11
    kind = "digest"


class ExpiredError(BundleError):
    """The signed index is past its ``expiresAt``."""

    exit_code = 12
    kind = "expired"


class RollbackError(BundleError):
    """The signed index's ``sequence`` is older than one already seen."""

    exit_code = 13
    kind = "rollback"


class EqualSequenceError(RollbackError):
    """The signed index's ``sequence`` equals the served one (accepted only with ``--allow-same``)."""


class MalformedBundleError(BundleError):
    """Signed metadata or a bundle is not what schemaVersion 1 describes."""

    exit_code = 14
    kind = "malformed"


# --- sources -------------------------------------------------------------------------------------


class SourceError(StellaMirrorError):
    """Something went wrong reading from a source (directory, S3, rsync, HTTP mirror, kit)."""

    exit_code = 4
    kind = "source"


class UnreachableError(SourceError):
    """The source could not be reached at all."""

    kind = "unreachable"


class HTTPStatusError(SourceError):
    """The source answered with an unexpected HTTP status."""

    kind = "http-status"

    def __init__(self, url: str, status: int) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: HTTP {status}")


class MissingAtSourceError(SourceError):
    """A file the signed index lists is not at the source (absent, HTTP 404/410, not in the kit)."""

    kind = "missing"


class StalledError(SourceError):
    """A transfer fell below the minimum throughput, or the run passed its deadline."""

    kind = "stalled"


class TruncatedError(SourceError):
    """A transfer ended early or a file is shorter than announced."""

    kind = "truncated"


class MalformedDocumentError(SourceError):
    """An input document (OSV, CSAF, OpenVEX, CycloneDX) is malformed.

    ``pointer`` is the RFC 6901 JSON pointer of the bad field ("" for the whole document).
    """

    exit_code = 5
    kind = "malformed-document"

    def __init__(self, path: str, pointer: str, reason: str) -> None:
        self.path = path
        self.pointer = pointer
        self.reason = reason
        where = f"{path}#{pointer}" if pointer else path
        super().__init__(f"{where}: {reason}")


class ExportRejectedError(SourceError):
    """An export was refused (e.g. ``--strict`` with rejected documents); nothing was published."""

    exit_code = 5
    kind = "export-rejected"


class LockedError(StellaMirrorError):
    """Another export or sync holds the export root's lock."""

    exit_code = 6
    kind = "locked"


class ExportConflictError(StellaMirrorError):
    """A verified export's id names something in the export root that is not that export (an operator's
    directory, a file, another export of the same name): nothing is moved, the operator decides."""

    exit_code = 7
    kind = "conflict"


class LocalIOError(StellaMirrorError):
    """Writing on this host failed (disk full, permissions, a read-only file system): nothing was published."""

    exit_code = 7
    kind = "local-io"
