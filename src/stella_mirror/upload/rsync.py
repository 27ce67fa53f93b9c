"""``rsync://host/module/path`` and ``host:path``: an export root on another host, written by the real ``rsync``.

The remote tree is the export root ``sync --source rsync://…`` (and a server on that host) reads: ``<exportId>/``
directories and a ``latest`` symlink. A publish is three kinds of rsync runs:

1. the verified files of the export (the plan's list, nothing else) into ``<exportId>/``, which no reader looks
   at until ``latest`` names it: ``--checksum`` decides what is already there (rsync's whole-file checksum,
   never size and mtime), ``--link-dest`` hard-links what the active export already holds, and changed files
   travel as rsync deltas against it;
2. ``latest`` switched to it: one symlink, which the receiving rsync writes under a temporary name and renames
   over the old one (atomic, like ``ExportRoot.switch``);
3. the exports beyond ``keep`` deleted (``--delete`` of an empty directory, filtered to those exports only).

A daemon module must be writable (``read only = no``) and keep symlinks as they are (``munge symlinks = no``):
the server and ``verify`` on that host follow ``latest``. The password comes from ``--password-file``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from stella_mirror.errors import ConfigError, SourceError, UnreachableError
from stella_mirror.publish import LATEST, check_export_id
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.retry import with_retries
from stella_mirror.sync.sources.interface import Source
from stella_mirror.sync.sources.rsync import TRANSIENT, RsyncSource, rsync_command
from stella_mirror.upload.plan import Plan
from stella_mirror.upload.target import CURRENT, Outcome, Target, check_not_older

_LINE = re.compile(r"^([dl-])\S*\s+([\d,]+)\s+(\S+ \S+)\s+(.+)$")
_STAT = re.compile(r"^(Number of regular files transferred|Literal data): ([\d,]+)", re.MULTILINE)


class RsyncTarget(Target):
    def __init__(self, url: str, options: SourceOptions, safe_url: str) -> None:
        self.url = safe_url
        self.sync_source = safe_url
        parts = urlsplit(url)
        self.daemon = parts.scheme == "rsync"
        if self.daemon and options.username and not parts.username:
            parts = parts._replace(netloc=f"{options.username}@{parts.netloc}")
        self.base = (urlunsplit(parts) if self.daemon else url).rstrip("/")
        self.options = options
        self._reader = RsyncSource(url, options, safe_url)

    def reader(self) -> Source:
        return self._reader

    def _rsync(self, args: Sequence[str], stdin: str | None = None) -> str:
        """One run of rsync (retried on its transient exit codes); its standard output."""
        cmd = rsync_command(self.options, self.daemon, args)

        def once() -> str:
            try:
                proc = subprocess.run(
                    cmd, input=stdin, capture_output=True, text=True, check=False, env={**os.environ, "LC_ALL": "C"}
                )
            except FileNotFoundError:
                raise SourceError("the rsync program is not installed") from None
            if proc.returncode != 0:
                lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
                message = f"{self.url}: rsync exit {proc.returncode}: {lines[0] if lines else 'no message'}"
                raise (UnreachableError if proc.returncode in TRANSIENT else SourceError)(message)
            return proc.stdout

        return with_retries(once)

    def _exports(self) -> dict[str, str]:
        """The export directories at the target (those holding ``mirror/``): id → listed mtime."""
        listing = self._rsync(["-r", "--list-only", "--no-human-readable", f"{self.base}/"])
        dirs: dict[str, str] = {}
        names = set()
        for line in listing.splitlines():
            m = _LINE.match(line)
            if m is None:
                continue
            names.add(m.group(4))
            if m.group(1) == "d" and "/" not in m.group(4):
                dirs[m.group(4)] = m.group(3)
        out = {}
        for name, mtime in dirs.items():
            try:
                check_export_id(name)
            except ConfigError:
                continue
            if f"{name}/mirror" in names:
                out[name] = mtime
        return out

    def publish(self, plan: Plan, keep: int, reporter: Reporter) -> Outcome:
        check_not_older(self._reader, plan, self.url)
        active = self._reader.export or None
        out = Outcome(self.url, self.sync_source, plan.export_id, plan.sequence)
        with tempfile.TemporaryDirectory(prefix="stella-mirror-publish-") as tmp:
            # 1. the export's verified files into its own directory
            # no -t: a file of the active export is hard-linked when its content (and mode) match, whatever its mtime
            args = [
                "-p",
                "--chmod=D755,F644",
                "--checksum",
                "--mkpath",
                "--files-from=-",
                "--stats",
                "--no-human-readable",
            ]
            if active is not None and active != plan.export_id:
                args.append(f"--link-dest=../{active}")
            reporter.event(
                "uploading", target=self.url, exportId=plan.export_id, files=len(plan.items), bytes=plan.total_bytes
            )
            stats = self._rsync(
                [*args, f"{plan.export_dir}/", f"{self.base}/{plan.export_id}/"],
                stdin="".join(f"{item.rel}\n" for item in plan.items),
            )
            counts = {k: int(v.replace(",", "")) for k, v in _STAT.findall(stats)}
            out.files_uploaded = counts.get("Number of regular files transferred", 0)
            out.bytes_uploaded = counts.get("Literal data", 0)
            out.files_unchanged = len(plan.items) - out.files_uploaded
            reporter.event(
                "staged",
                target=f"{self.url}/{plan.export_id}",
                filesUploaded=out.files_uploaded,
                bytesUploaded=out.bytes_uploaded,
            )
            # 2. latest switched to it (one symlink, renamed into place by the receiving rsync)
            if active != plan.export_id:
                link = Path(tmp) / LATEST
                os.symlink(plan.export_id, link)
                self._rsync(["-l", str(link), f"{self.base}/"])
                reporter.event("switched", target=self.url, exportId=plan.export_id)
            elif out.files_uploaded == 0:
                out.state = CURRENT
            # 3. exports beyond keep, oldest first (never the new one)
            exports = self._exports()
            others = sorted((e for e in exports if e != plan.export_id), key=lambda e: (exports[e], e))
            doomed = others[: max(0, len(others) - (keep - 1))]
            if doomed:
                empty = Path(tmp) / "empty"
                empty.mkdir()
                rules = [f"--include=/{e}/***" for e in doomed]
                self._rsync(["-r", "--delete", *rules, "--exclude=*", f"{empty}/", f"{self.base}/"])
            out.exports_removed = doomed
        return out
