"""``sync --watch`` (B5): poll each job's upstream every ``poll`` seconds with one conditional request,
sync when it changed, and do a full check at least every ``interval`` seconds.

The "has it changed?" decision is the job's own (``job.run_job`` compares the source's probe token with the
one recorded at the last full check, which must be younger than ``interval``), so a one-shot run from a
timer and a watching process behave alike. Sources stay open between polls: an HTTP connection and an
OAuth token are reused until they expire. Polls that find nothing new update the root's status file (the
root is confirmed current) but are not added to the history, which would otherwise fill with them. Jobs poll
side by side, one thread each: a stalled source delays only its own job.
"""

from __future__ import annotations

import contextlib
import threading

from stella_mirror.errors import StellaMirrorError
from stella_mirror.sync.job import run_job
from stella_mirror.sync.jobs import JobSpec
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources.interface import Source
from stella_mirror.sync.state import SyncState


def watch(specs: list[JobSpec], state: SyncState, reporter: Reporter, poll: float, stop: threading.Event) -> None:
    """Poll and sync until ``stop`` is set; errors are recorded and reported, never fatal.

    Each job polls in its own thread: a job whose source stalls (until its deadline fails it) never delays
    another job's poll or publish (their destinations differ, each under its own root's lock)."""
    reporter.event("watch-start", jobs=[s.job.name for s in specs], pollSeconds=poll)
    threads = [threading.Thread(target=_loop, args=(spec, state, reporter, poll, stop), name=f"watch-{spec.job.name}")
               for spec in specs]
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            stop.wait(0.5)  # the main thread stays free for the signal handlers that set `stop`
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        reporter.event("watch-stop")


def _loop(spec: JobSpec, state: SyncState, reporter: Reporter, poll: float, stop: threading.Event) -> None:
    """One job's polls; its source stays open between them (a fresh one after a failure)."""
    source: Source | None = None
    try:
        while not stop.is_set():
            try:
                if source is None:
                    source = spec.open()
                run_job(spec.job, source, state, reporter, record_unchanged=False)
            except StellaMirrorError:
                if source is not None:  # already recorded and reported; a fresh connection next time
                    with contextlib.suppress(Exception):
                        source.close()
                    source = None
            except Exception as exc:  # a bug must not end the other jobs' watch silently
                reporter.event("watch-error", "error", job=spec.job.name, error=f"{type(exc).__name__}: {exc}")
            stop.wait(poll)
    finally:
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
