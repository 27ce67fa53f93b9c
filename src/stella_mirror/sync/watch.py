"""``sync --watch`` (B5): poll each job's upstream every ``poll`` seconds with one conditional request,
sync when it changed, and do a full check at least every ``interval`` seconds.

The "has it changed?" decision is the job's own (``job.run_job`` compares the source's probe token with the
one recorded at the last full check, which must be younger than ``interval``), so a one-shot run from a
timer and a watching process behave alike. Sources stay open between polls: an HTTP connection and an
OAuth token are reused until they expire. Polls that find nothing new update the root's status file (the
root is confirmed current) but are not added to the history, which would otherwise fill with them.
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
    """Poll and sync until ``stop`` is set; errors are recorded and reported, never fatal."""
    sources: dict[str, Source] = {}
    reporter.event("watch-start", jobs=[s.job.name for s in specs], pollSeconds=poll)
    try:
        while not stop.is_set():
            for spec in specs:
                if stop.is_set():
                    break
                try:
                    source = sources.get(spec.job.name)
                    if source is None:
                        source = sources[spec.job.name] = spec.open()
                    run_job(spec.job, source, state, reporter, record_unchanged=False)
                except StellaMirrorError:
                    # Already recorded and reported; a fresh connection next time.
                    dropped = sources.pop(spec.job.name, None)
                    if dropped is not None:
                        dropped.close()
            stop.wait(poll)
    finally:
        for source in sources.values():
            with contextlib.suppress(Exception):
                source.close()
        reporter.event("watch-stop")
