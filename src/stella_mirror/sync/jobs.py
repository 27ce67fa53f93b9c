"""From configuration (the ``sync`` section, or command-line options) to runnable jobs, and running them."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stella_mirror.bundle.keyfiles import load_trusted_keys
from stella_mirror.errors import ConfigError, StellaMirrorError
from stella_mirror.sync.config import SourceOptions, SyncConfig, SyncJobConfig
from stella_mirror.sync.job import Job, run_job
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources import open_source
from stella_mirror.sync.sources.interface import Source
from stella_mirror.sync.state import SyncState


@dataclass(frozen=True)
class JobSpec:
    """A job and how to open its source."""

    job: Job
    source_url: str
    options: SourceOptions

    def open(self) -> Source:
        return open_source(self.source_url, self.options)


def _dest(roots: Mapping[str, Path | None], job: SyncJobConfig, index: int) -> Path:
    if job.dest is not None:
        return job.dest
    root = roots.get(job.kind)
    if root is None:
        raise ConfigError(f"sync.jobs.{index}.dest", f"required: no {job.kind} export root is configured either")
    return root


def specs_from_config(
    cfg: SyncConfig, roots: Mapping[str, Path | None], names: list[str] | None = None
) -> list[JobSpec]:
    """The configured jobs (all, or those named), with their keys loaded (errors name the key path).

    ``roots`` are the products' export roots of the same configuration file (a job's default ``dest``): passed
    in, so the sync depends on its own section only (``stella_mirror.config`` imports it, not the reverse)."""
    jobs = cfg.jobs
    if names:
        unknown = sorted(set(names) - {j.name for j in jobs})
        if unknown:
            raise ConfigError("sync.jobs", f"no job named {', '.join(unknown)}")
    if not jobs:
        raise ConfigError("sync.jobs", "no sync job is configured (or pass --source, --dest, --kind, --trust-key)")
    specs = []
    for i, job in enumerate(jobs):
        if names and job.name not in names:
            continue
        try:
            keys = load_trusted_keys(job.trust_keys)
        except ConfigError as exc:
            raise ConfigError(f"sync.jobs.{i}.trustKeys", exc.reason) from None
        options = SourceOptions.model_validate(job.model_dump(include=set(SourceOptions.model_fields)))
        spec = Job(job.name, job.kind, _dest(roots, job, i), keys, job.keep, job.allow_same, cfg.interval_seconds,
                   run_timeout=job.run_timeout_seconds)
        specs.append(JobSpec(spec, job.source, options))
    return specs


def run_once(
    specs: list[JobSpec], state: SyncState, reporter: Reporter, full: bool = False
) -> StellaMirrorError | None:
    """Run every job once, side by side (their destinations differ: each holds its own root's lock, and one
    job's transfers overlap another's verification); the first failing job's error is returned, in the
    configured order (each is recorded and reported as it happens)."""

    opened: list[Source | StellaMirrorError] = []
    for spec in specs:  # one after the other: S3 clients share what the first one loaded
        try:
            opened.append(spec.open())
        except StellaMirrorError as exc:
            opened.append(exc)

    def one(job: Job, source: Source | StellaMirrorError) -> StellaMirrorError | None:
        if isinstance(source, StellaMirrorError):
            return source
        try:
            with source:
                run_job(job, source, state, reporter, full=full)
        except StellaMirrorError as exc:
            return exc
        return None

    jobs = [spec.job for spec in specs]
    if len(specs) == 1:
        errors = [one(jobs[0], opened[0])]
    else:
        with ThreadPoolExecutor(len(specs), thread_name_prefix="sync-job") as pool:
            errors = list(pool.map(one, jobs, opened))
    return next((e for e in errors if e is not None), None)
