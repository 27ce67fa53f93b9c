"""The ``sync`` section of the mirror configuration: named sync jobs (runbook §4: one per product line).

```yaml
sync:
  stateDir: /var/lib/stella-mirror        # run history (SQLite); default: see docs/sync.md
  pollSeconds: 30                         # --watch: conditional poll of each job's upstream index
  intervalSeconds: 300                    # a full check at least this often, even when the poll says "unchanged"
  jobs:
    - name: concelier
      kind: concelier
      source: s3://mirror-stellaops/concelier/latest
      dest: /opt/stellaops/mirror-data/concelier     # default: concelier.mirror.exportRoot
      trustKeys: [/etc/stella-mirror/mirror-key.pub]
```

Environment variables override the file as for the rest of the configuration (``SYNC__JOBS__0__SOURCE``…).
Secrets are never values here: only paths of files that hold them (``passwordFile``, ``clientSecretFile``,
``tokenFile``, ``accessKeyIdFile``/``secretAccessKeyFile``); a password inside a source URL is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

Kind = Literal["concelier", "excititor"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SourceOptions(_Model):
    """How to reach a source: what each kind of source needs besides its URL (all optional)."""

    endpoint_url: str | None = None
    """S3: the S3 API endpoint (default: AWS, or ``AWS_ENDPOINT_URL``)."""
    region: str | None = None
    access_key_id_file: Path | None = None
    """S3: files holding the access key (default: the standard AWS credential chain)."""
    secret_access_key_file: Path | None = None
    username: str | None = None
    """HTTPS upstream: Basic Auth user (with ``passwordFile``); rsync: the daemon user."""
    password_file: Path | None = None
    token_file: Path | None = None
    """HTTPS upstream: a static bearer token, read from this file."""
    token_url: str | None = None
    """HTTPS upstream: an OAuth 2.0 token endpoint (client-credentials grant)."""
    client_id: str | None = None
    client_secret_file: Path | None = None
    scope: str | None = None
    ca_file: Path | None = None
    """HTTPS upstream: CA bundle for a private certificate authority."""
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Per request (each read may wait this long), and the grace period of every transfer's deadline."""
    min_bytes_per_second: int = Field(default=64 << 10, ge=1)
    """After its grace period a transfer must keep this throughput: a file of a signed size must arrive
    within ``timeoutSeconds + size / minBytesPerSecond``, or the job fails as a stalled source."""
    run_timeout_seconds: float = Field(default=3600.0, gt=0, le=604800)
    """A whole run (one job) must finish within this; past it the job fails and releases its lock."""
    redirects: Literal["same-origin", "refuse"] = "same-origin"
    """HTTPS upstream: follow redirects within the upstream's origin only, or none at all."""

    @model_validator(mode="after")
    def _pairs(self) -> SourceOptions:
        if (self.access_key_id_file is None) != (self.secret_access_key_file is None):
            raise ValueError("accessKeyIdFile and secretAccessKeyFile must be given together")
        if self.token_url is not None and (self.client_id is None or self.client_secret_file is None):
            raise ValueError("tokenUrl needs clientId and clientSecretFile")
        if self.token_url is not None and self.token_file is not None:
            raise ValueError("give tokenFile or tokenUrl, not both")
        return self


class SyncJobConfig(SourceOptions):
    """One named job: a source, a destination export root, the keys its exports must be signed with."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    kind: Kind
    source: str
    dest: Path | None = None
    """The export root to publish into; default: the product's export root in this configuration."""
    trust_keys: tuple[Path, ...] = Field(min_length=1)
    keep: int = Field(default=3, ge=1, le=1000)
    allow_same: bool = False

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        check_source_url(value)
        return value


class SyncConfig(_Model):
    """``sync``: where history lives, how often ``--watch`` polls, and the jobs."""

    state_dir: Path | None = None
    poll_seconds: float = Field(default=30.0, gt=0, le=86400)
    interval_seconds: float = Field(default=300.0, gt=0, le=604800)
    jobs: tuple[SyncJobConfig, ...] = ()

    @field_validator("jobs")
    @classmethod
    def _unique(cls, value: tuple[SyncJobConfig, ...]) -> tuple[SyncJobConfig, ...]:
        """Names identify jobs; destinations too (one job per export root: jobs run side by side)."""
        names = [job.name for job in value]
        dests = [str(job.dest) for job in value if job.dest is not None]
        for what, items in (("job name", names), ("dest", dests)):
            twice = sorted({str(i) for i in items if items.count(i) > 1})
            if twice:
                raise ValueError(f"{what} {twice[0]!r} is used by two jobs")
        return value


SCHEMES = ("s3", "rsync", "http", "https", "file")


def check_source_url(value: str) -> None:
    """Refuse what no source understands, and secrets inside a URL (ValueError)."""
    parts = urlsplit(value)
    if parts.scheme in SCHEMES:
        if parts.password is not None:
            raise ValueError("a password inside the source URL is refused: put it in a file (passwordFile)")
        if parts.scheme in ("s3", "http", "https", "rsync") and not parts.hostname:
            raise ValueError(f"{value!r} names no host or bucket")
        return
    if "://" in value:
        raise ValueError(f"unsupported source scheme {parts.scheme!r} (use one of {', '.join(SCHEMES)})")
    if not value:
        raise ValueError("must not be empty")
