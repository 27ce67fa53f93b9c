"""One publish: verify the local export against pinned keys, plan it, hand it to its target."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from stella_mirror.bundle import store
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.errors import ConfigError, LocalIOError
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources import open_source, redact_url
from stella_mirror.timeutil import utcnow
from stella_mirror.upload.plan import plan_export
from stella_mirror.upload.target import Outcome, Target

HINT = "s3://bucket/prefix, rsync://host/module/path, host:path or file:///dir"


def open_target(url: str, options: SourceOptions, keys: TrustedKeys) -> Target:
    """The target for ``url``: the sync's source for the same URL decides what it is (so a target is always
    written as the sync of that scheme reads it). ConfigError naming ``--to`` when it is not a writable tree."""
    from botocore.exceptions import BotoCoreError

    from stella_mirror.sync.sources.file import FileSource
    from stella_mirror.sync.sources.rsync import RsyncSource
    from stella_mirror.sync.sources.s3 import S3Source

    try:
        source = open_source(url, options)
    except ConfigError as exc:
        raise ConfigError("--to", exc.reason) from None
    except BotoCoreError as exc:  # building the S3 client: e.g. AWS_PROFILE naming no profile
        raise ConfigError("--to", f"{redact_url(url)}: the S3 client cannot be set up: {exc}") from None
    safe = redact_url(url)
    parts = urlsplit(url)
    if isinstance(source, S3Source):
        from stella_mirror.upload.s3 import S3Target

        return S3Target(parts.netloc, parts.path, options, safe)
    if isinstance(source, RsyncSource):
        from stella_mirror.upload.rsync import RsyncTarget

        return RsyncTarget(url, options, safe)
    if isinstance(source, FileSource):
        from stella_mirror.upload.directory import DirectoryTarget

        return DirectoryTarget(source.root, safe, keys)
    raise ConfigError("--to", f"{safe} is not a publish target (use {HINT})")


def publish(
    export_root: Path, to: str, keys: TrustedKeys, keep: int, options: SourceOptions, reporter: Reporter
) -> Outcome:
    """Verify ``export_root``'s active export (or an export directory) against ``keys``, then publish it to ``to``.

    Nothing is written anywhere before the verification passes: a tampered, expired or malformed export raises
    its :class:`~stella_mirror.errors.BundleError` and the target is untouched.
    """
    if keep < 1:
        raise ConfigError("--keep", "must be at least 1")
    target = open_target(to, options, keys)
    export_dir = store.resolve_export_dir(export_root)
    verdict = store.verify_export_dir(export_dir, keys, utcnow())
    plan = plan_export(export_dir, verdict)
    reporter.event(
        "verified",
        kind=plan.kind,
        exportId=plan.export_id,
        sequence=plan.sequence,
        files=len(plan.items),
        bytes=plan.total_bytes,
        keyIds=sorted(verdict.key_ids),
    )
    reporter.event("publish-start", target=target.url, syncSource=target.sync_source)
    try:
        outcome = target.publish(plan, keep, reporter)
    except OSError as exc:  # reading the export, or staging into a file:// target
        raise LocalIOError(f"{exc.filename or export_dir}: {exc.strerror or exc}") from None
    reporter.event(outcome.state, **{k: v for k, v in outcome.as_dict().items() if k != "state"})
    return outcome
