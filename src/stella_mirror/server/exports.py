"""Which export a request reads: resolved once per request, then every file is opened under it.

``latest`` is read with ``readlink`` exactly once and the export directory is opened as a descriptor; every
file of the response is then opened *relative to that descriptor* (``openat`` with ``O_NOFOLLOW``). A
publish that switches ``latest`` — or prunes the old export — while a response is in flight cannot mix
two exports: the descriptor pins the old directory and the open file descriptors pin their inodes.

A request may also *pin* an export id it learned from an index (``/concelier/exports/@<exportId>/…``):
the export is served while the publisher still keeps it, so a consumer can fetch a manifest and its
bundle as two requests and be sure both come from the same export.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LATEST = "latest"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ExportNotFound(Exception):
    """The export (or a file in it) does not exist, or it would lead outside the export root.

    ``reason`` is safe to show to clients (it never names a path outside the request)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RootUnavailable(Exception):
    """The export root itself is missing or unreadable, or nothing is published (server-side problem)."""


def safe_segment(name: str) -> bool:
    """A path segment we are willing to open: a bounded alphabet, no leading dot (so never ``..``)."""
    return bool(_SEGMENT.match(name))


@dataclass(frozen=True, slots=True)
class OpenExport:
    """An export directory opened for one request."""

    export_id: str
    dir_fd: int


class ExportResolver:
    """Resolves ``activeExportId`` (``latest`` or a fixed id) or a pinned id under one export root."""

    def __init__(self, root: Path, active_export_id: str = LATEST) -> None:
        self.root = root
        self.active_export_id = active_export_id

    def active_id(self) -> str:
        """The id the active pointer names now (raises :class:`RootUnavailable`)."""
        if self.active_export_id != LATEST:
            return self.active_export_id
        try:
            target = os.readlink(self.root / LATEST)
        except FileNotFoundError:
            raise RootUnavailable("nothing is published yet (no 'latest' in the export root)") from None
        except OSError as exc:
            raise RootUnavailable(f"cannot read 'latest' in the export root: {exc.strerror}") from None
        name = target.rstrip("/").rsplit("/", 1)[-1]
        if not safe_segment(name) or name == LATEST:
            raise RootUnavailable("'latest' does not name an export directory")
        return name

    @contextlib.contextmanager
    def open(self, pin: str | None = None) -> Iterator[OpenExport]:
        """Open the active (or pinned) export directory for the duration of a request."""
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RootUnavailable(f"export root unreadable: {exc.strerror}") from None
        try:
            if pin is not None:
                if not safe_segment(pin) or pin == LATEST:
                    raise ExportNotFound(f"{pin!r} is not an export id")
                export_id = pin
            elif self.active_export_id != LATEST:
                export_id = self.active_export_id
            else:
                try:
                    target = os.readlink(LATEST, dir_fd=root_fd)
                except OSError:
                    raise RootUnavailable("nothing is published yet (no 'latest' in the export root)") from None
                export_id = target.rstrip("/").rsplit("/", 1)[-1]
                if not safe_segment(export_id) or export_id == LATEST:
                    raise RootUnavailable("'latest' does not name an export directory")
            try:
                dir_fd = os.open(export_id, _DIR_FLAGS, dir_fd=root_fd)
            except OSError:
                if pin is not None:
                    raise ExportNotFound(f"export {pin} is not (or no longer) kept on this mirror") from None
                raise RootUnavailable(f"the active export {export_id} is missing") from None
        finally:
            os.close(root_fd)
        try:
            yield OpenExport(export_id, dir_fd)
        finally:
            os.close(dir_fd)


def open_file(dir_fd: int, parts: tuple[str, ...]) -> int:
    """Open ``parts`` (already validated segments) under ``dir_fd`` without following any symlink.

    Returns a file descriptor of a regular file; raises :class:`ExportNotFound` otherwise.
    """
    fd = dir_fd
    opened: list[int] = []
    try:
        for part in parts[:-1]:
            if not safe_segment(part):
                raise ExportNotFound("not found")
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                raise ExportNotFound("not found") from None
            opened.append(fd)
        last = parts[-1]
        if not safe_segment(last):
            raise ExportNotFound("not found")
        try:
            file_fd = os.open(last, _FILE_FLAGS, dir_fd=fd)
        except OSError:
            raise ExportNotFound("not found") from None
    finally:
        for d in opened:
            os.close(d)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise ExportNotFound("not found")
    return file_fd


def open_dir(dir_fd: int, parts: tuple[str, ...]) -> int:
    """Open a subdirectory (validated segments, no symlinks) under ``dir_fd``; the caller closes it."""
    fd = dir_fd
    for i, part in enumerate(parts):
        if not safe_segment(part):
            raise ExportNotFound("not found")
        try:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            raise ExportNotFound("not found") from None
        finally:
            if i:
                os.close(fd)
        fd = nfd
    return fd
