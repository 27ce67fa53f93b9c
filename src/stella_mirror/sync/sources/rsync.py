"""``rsync://host/module/path`` and ``host:path``: the real ``rsync`` program as the transport.

The URL names an export directory, or an export root whose ``latest`` symlink is read from rsync's own
listing and pinned for the run. A run costs a handful of rsync connections, each for a batch:

1. the probe: one recursive ``--list-only`` of the tree (sizes, mtimes, ``latest -> <exportId>``): the
   token is the pinned export plus the size and mtime of its index files, and the listing tells each
   file's size before anything is transferred;
2. the index file(s); 3. their signatures; 4. everything the signed indexes list that is not reused.

A file whose listed size is above its cap (the signed size, or the signature cap) is refused without being
transferred, and ``--max-size`` bounds every transfer by the largest cap of its batch. Interrupted transfers
are retried (rsync's transient exit codes) and resume from rsync's partial directory in the staging tree.
The daemon password comes from ``passwordFile`` (``--password-file``), never the command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from stella_mirror.bundle.layout import SIGNATURE_SUFFIXES, canonical_relpath, index_paths, safe_segment
from stella_mirror.errors import DigestError, MissingAtSourceError, SourceError, StalledError, UnreachableError
from stella_mirror.sync.config import SourceOptions
from stella_mirror.sync.retry import with_retries
from stella_mirror.sync.sources.interface import INDEX_CAP, SIGNATURE_CAP, FetchStats, Progress, Source, Want

TRANSIENT = {10, 12, 30, 35}
"""rsync exit codes worth another try: socket I/O, protocol stream, timeouts."""
MISSING = {23, 24}
"""Some files were not transferred (absent at the source, or vanished)."""
_LINE = re.compile(r"^([dl-])\S*\s+(\d+)\s+(\S+ \S+)\s+(.+)$")


def rsync_command(options: SourceOptions, daemon: bool, args: Sequence[str]) -> list[str]:
    """The rsync command line with the connection settings of ``options`` (the sync's source and ``publish``'s
    target run rsync the same way): I/O and connect timeouts, and a daemon's password file."""
    timeout = int(options.timeout_seconds)
    cmd = ["rsync", "--no-motd", f"--timeout={timeout}"]
    if daemon:
        cmd.append(f"--contimeout={timeout}")
        if options.password_file is not None:
            cmd.append(f"--password-file={options.password_file}")
    return [*cmd, *args]


class RsyncSource(Source):
    def __init__(self, url: str, options: SourceOptions, safe_url: str) -> None:
        self.url = safe_url
        parts = urlsplit(url)
        if parts.scheme == "rsync" and options.username and not parts.username:
            parts = parts._replace(netloc=f"{options.username}@{parts.netloc}")
        self.base = (urlunsplit(parts) if parts.scheme == "rsync" else url).rstrip("/")
        self.daemon = parts.scheme == "rsync"
        # A daemon reads --files-from names relative to the module, whatever the source path says: name the
        # module as the source and each file as <path in module>/./<rel> (the "/./" keeps only <rel>).
        if self.daemon:
            module, _, inside = parts.path.strip("/").partition("/")
            self.transfer_root = urlunsplit(parts._replace(path=f"/{module}/"))
            self.inside = inside
        else:
            self.transfer_root, self.inside = f"{self.base}/", ""
        self.options = options
        self.export = ""
        """The pinned export directory under the base ("" when the base is one)."""
        self.sizes: dict[str, tuple[int, str]] = {}
        """The pinned export's files: relative path → (size, mtime as listed)."""
        self.timeout = options.timeout_seconds
        self.min_rate = options.min_bytes_per_second
        self._small: dict[str, bytes] = {}
        """The index signatures, brought with the indexes in one transfer."""

    # --- running rsync ---------------------------------------------------------------------------------

    def _rsync(self, args: Sequence[str], stdin: str | None = None, size: int = 0) -> subprocess.CompletedProcess[str]:
        """One rsync run, retried while it fails transiently; it must finish within the time ``size`` bytes
        may take at the minimum throughput (:class:`~stella_mirror.sync.sources.interface.Pace`)."""
        cmd = rsync_command(self.options, self.daemon, args)

        def once() -> subprocess.CompletedProcess[str]:
            pace = self.pace("rsync")
            try:
                proc = subprocess.run(
                    cmd,
                    input=stdin,
                    capture_output=True,
                    text=True,
                    check=False,
                    env={**os.environ, "LC_ALL": "C"},
                    timeout=pace.seconds_for(size),
                )
            except FileNotFoundError:
                raise SourceError("the rsync program is not installed") from None
            except subprocess.TimeoutExpired:
                raise StalledError(f"{self.url}: rsync did not finish within {pace.seconds_for(size):.0f} s "
                                   f"({size} bytes at the minimum of {pace.rate} bytes/s)") from None
            if proc.returncode in TRANSIENT:
                raise UnreachableError(f"{self.url}: rsync exit {proc.returncode}: {_message(proc.stderr)}")
            if proc.returncode not in (0, *MISSING):
                raise SourceError(f"{self.url}: rsync exit {proc.returncode}: {_message(proc.stderr)}")
            return proc

        return with_retries(once)

    # --- the interface --------------------------------------------------------------------------------

    def probe(self, kind: str, previous: str | None) -> str:
        listing = self._rsync(["-rl", "--list-only", "--no-human-readable", f"{self.base}/"]).stdout
        entries: dict[str, tuple[str, int, str]] = {}
        for line in listing.splitlines():
            m = _LINE.match(line)
            if m:
                entries[m.group(4)] = (m.group(1), int(m.group(2)), m.group(3))
        self.export = ""
        latest = [name for name in entries if name.startswith("latest -> ")]
        if latest and entries[latest[0]][0] == "l":
            target = latest[0].removeprefix("latest -> ").rstrip("/").split("/")[-1]
            if not safe_segment(target):
                raise SourceError(f"{self.url}: latest names {target!r}, not an export")
            self.export = target
        prefix = f"{self.export}/" if self.export else ""
        self.sizes = {
            name[len(prefix) :]: (size, mtime)
            for name, (typ, size, mtime) in entries.items()
            if typ == "-" and name.startswith(prefix)
        }
        bad = sorted(name for name in self.sizes if not canonical_relpath(name))
        if bad:
            raise SourceError(f"{self.url}: the listing holds {bad[0]!r}, not a canonical path")
        rels = index_paths(kind, self.sizes)
        self._small = {}
        return "|".join([self.export, *(f"{r}:{self.sizes[r][0]}:{self.sizes[r][1]}" for r in rels)])

    def index_files(self, kind: str) -> dict[str, bytes]:
        rels = index_paths(kind, self.sizes)
        if not rels:
            return {}
        sigs = [rel + s for rel in rels for s in SIGNATURE_SUFFIXES if rel + s in self.sizes]
        self._small = self._read_small(sigs, SIGNATURE_CAP)  # the same connection as the indexes: one fewer
        return self._read_small(rels, INDEX_CAP)

    def small_files(self, rels: Sequence[str], max_size: int) -> dict[str, bytes]:
        missing = [rel for rel in rels if rel not in self._small]
        found = {rel: self._small[rel] for rel in rels if rel in self._small}
        return found | (self._read_small(missing, max_size) if missing else {})

    def _read_small(self, rels: Sequence[str], max_size: int) -> dict[str, bytes]:
        """Small files into memory through a temporary directory outside the export root."""
        present = [rel for rel in rels if rel in self.sizes]
        for rel in present:
            if self.sizes[rel][0] > max_size:
                raise DigestError(rel, f"listed at {self.sizes[rel][0]} bytes, above the {max_size} allowed")
        if not present:
            return {}
        with tempfile.TemporaryDirectory(prefix="stella-mirror-rsync-") as tmp:
            self._transfer(present, Path(tmp), max_size, sum(self.sizes[r][0] for r in present))
            return {rel: (Path(tmp) / rel).read_bytes() for rel in present if (Path(tmp) / rel).is_file()}

    def fetch(self, wants: Sequence[Want], stage: Path, partial: Path, progress: Progress) -> FetchStats:
        stats = FetchStats()
        todo = []
        for want in wants:
            listed = self.sizes.get(want.rel)
            if listed is None:
                if want.optional:
                    continue
                raise MissingAtSourceError(f"{self.url}: {want.rel}: missing at the source")
            if listed[0] > want.max_size:
                raise DigestError(want.rel, f"listed at {listed[0]} bytes, above the {want.max_size} allowed")
            todo.append(want)
        if not todo:
            return stats
        self._transfer([w.rel for w in todo], stage, max(w.max_size for w in todo),
                       sum(self.sizes[w.rel][0] for w in todo))
        for want in todo:
            path = stage / want.rel
            if not path.is_file():
                if want.optional:
                    continue
                raise MissingAtSourceError(f"{self.url}: {want.rel}: missing at the source")
            stats.files_fetched += 1
            stats.bytes_fetched += path.stat().st_size
            progress.advance(path.stat().st_size)
        return stats

    def _transfer(self, rels: Sequence[str], dest: Path, max_size: int, size: int) -> None:
        """One rsync run bringing ``rels`` (relative to the pinned export) into ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        prefix = "/".join(p for p in (self.inside, self.export) if p)
        names = "".join(f"{prefix}/./{rel}\n" if prefix else f"./{rel}\n" for rel in rels)
        self._rsync(
            [
                "-t",
                "--files-from=-",
                f"--max-size={max_size}",
                "--partial-dir=.rsync-partial",
                self.transfer_root,
                f"{dest}/",
            ],
            stdin=names,
            size=size,
        )


def _message(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"
