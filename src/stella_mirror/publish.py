"""Atomic publication of export directories into an export root — shared by ``export`` and ``sync``.

An export root holds complete exports by id and a ``latest`` symlink naming the active one::

    <root>/.lock                    flock held while staging and switching
    <root>/.staging-<id>-<rand>/    a new export being written (never served)
    <root>/<exportId>/              complete, verified exports
    <root>/latest -> <exportId>     the active export, switched with symlink-to-temp + rename

The switch is the last step, after the staged tree is complete (and, for sync, verified): readers
either see the old export or the new one, never a mix. A failure before the switch removes the
staging directory and leaves ``latest`` untouched (bandersnatch's "state written last").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from stella_mirror.bundle.atomic import fsync_dir, fsync_tree
from stella_mirror.bundle.layout import LATEST as LATEST  # re-exported: owned by bundle.layout
from stella_mirror.bundle.layout import valid_export_id
from stella_mirror.errors import ConfigError, LockedError


def check_export_id(export_id: str) -> str:
    """Export ids become directory names: allow only a safe, bounded alphabet."""
    if not valid_export_id(export_id):
        raise ConfigError("exportId", f"{export_id!r} is not a valid export id ([A-Za-z0-9._-], not 'latest')")
    return export_id


class ExportRoot:
    """One export root directory (Concelier or Excititor)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # --- reading ----------------------------------------------------------------------------------

    def active_id(self) -> str | None:
        """The export id ``latest`` points at, or None when nothing is published."""
        link = self.path / LATEST
        if not link.is_symlink():
            return None
        return os.readlink(link).rstrip("/").split("/")[-1]

    def active_dir(self) -> Path | None:
        active = self.active_id()
        return self.path / active if active else None

    def export_ids(self) -> list[str]:
        """Published export directories, oldest first (by modification time, then name).

        Only directories that look like exports (they hold ``mirror/``) count, so pruning never
        removes anything else an operator keeps beside the exports.
        """
        if not self.path.is_dir():
            return []
        dirs = [
            p
            for p in self.path.iterdir()
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / "mirror").is_dir()
        ]
        dirs.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.name for p in dirs]

    # --- writing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the root's exclusive lock (non-blocking: a second writer fails fast)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise LockedError(f"{self.path}: another export or sync is running (lock held)") from exc
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, export_id: str, exist_ok: bool = False) -> Iterator[Path]:
        """A fresh staging directory; removed unless :meth:`commit` moved it into place.

        ``exist_ok`` allows staging an export that is already published, to :meth:`repair` it.
        """
        check_export_id(export_id)
        if (self.path / export_id).exists() and not exist_ok:
            raise ConfigError("exportId", f"export {export_id!r} already exists in {self.path}")
        stage = self.path / f".staging-{export_id}-{secrets.token_hex(4)}"
        stage.mkdir(parents=True)
        try:
            yield stage
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)

    def commit(self, stage: Path, export_id: str, keep: int = 3) -> Path:
        """Move a complete staged export into place, switch ``latest`` to it, then prune."""
        final = self.path / check_export_id(export_id)
        fsync_tree(stage)  # every staged byte is on disk before the tree gets its name (and `latest` names it)
        os.replace(stage, final)
        fsync_dir(self.path)
        self.switch(export_id)
        self.prune(keep)
        return final

    def repair(self, stage: Path, export_id: str) -> int:
        """Make a published export's files those of a complete staged copy of the same export, in place.

        Only files that are not already the staged ones (another inode: the staged copy hard-links every
        file it could reuse) are renamed over their counterparts, one atomic rename each, so a reader sees
        a file's old bytes or its new ones. Used to re-sync (``--allow-same``) an export whose signed index
        is unchanged: its correct bytes are the ones readers expect. Returns how many files were replaced.
        """
        final = self.path / check_export_id(export_id)
        fsync_tree(stage)
        replaced = 0
        for src in sorted(p for p in stage.rglob("*") if p.is_file()):
            dest = final / src.relative_to(stage)
            try:
                if os.path.samefile(src, dest):
                    continue
            except FileNotFoundError:
                dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            fsync_dir(dest.parent)
            replaced += 1
        fsync_dir(self.path)
        return replaced

    def clean_leftovers(self) -> None:
        """Remove what a killed writer left behind (staging trees, temporary ``latest`` links); call it
        holding the lock."""
        for p in self.path.glob(".staging-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.path.glob(".latest-*"):
            if p.is_symlink():
                p.unlink()

    def switch(self, export_id: str) -> None:
        """Point ``latest`` at ``export_id`` atomically (symlink to a temp name, then rename)."""
        tmp = self.path / f".latest-{secrets.token_hex(4)}"
        os.symlink(export_id, tmp)
        os.replace(tmp, self.path / LATEST)
        fsync_dir(self.path)

    def prune(self, keep: int) -> list[str]:
        """Remove the oldest exports beyond ``keep`` (never the active one); return what went."""
        if keep < 1:
            raise ConfigError("keep", "must be at least 1")
        active = self.active_id()
        ids = [i for i in self.export_ids() if i != active]
        doomed = ids[: max(0, len(ids) - (keep - 1))] if active else ids[: max(0, len(ids) - keep)]
        for export_id in doomed:
            shutil.rmtree(self.path / export_id, ignore_errors=True)
        # Leftover staging directories from a killed run are garbage once we hold the lock.
        self.clean_leftovers()
        return doomed


def next_sequence(root: ExportRoot, read_sequence: Callable[[Path], int | None]) -> int:
    """One more than the active export's sequence (1 for an empty root)."""
    active = root.active_dir()
    if active is None or not active.exists():
        return 1
    current = read_sequence(active)
    return (current or 0) + 1
