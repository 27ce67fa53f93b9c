"""The one way stella-mirror writes a file other processes may read: a temporary name in the same directory,
written, fsynced, renamed over the final name, and the directory fsynced — readers see the old bytes or the
new ones, and after a crash the disk holds one of them (never an empty or partial file under the name).

Plus the fsync helpers the publish steps need so that staged data is on disk before ``latest`` names it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644, buffering: int = 1 << 20, sync_dir: bool = True) -> Iterator[IO[bytes]]:
    """A file object on a temporary name that replaces ``path`` (fsynced, then renamed, then the directory
    fsynced) only when the block succeeds; on failure the temporary file is removed and ``path`` untouched.

    ``sync_dir=False`` leaves the directory's fsync to the caller: a writer of many files into one staging
    tree, which is made durable as a whole before it is published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as raw:
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_file(path, mode) as fh:
        fh.write(data)


def fsync_dir(path: Path) -> None:
    """fsync a directory so the renames and links inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file written by someone else (a download, an rsync transfer) before it is published."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files hard-linked from a published export are already
    on disk: their fsync returns at once), deepest first, so a staged tree is durable before it is published."""
    for dirpath, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink():
                fsync_file(p)
        fsync_dir(Path(dirpath))
