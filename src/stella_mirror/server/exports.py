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
import stat
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from pathlib import Path

from stella_mirror.bundle.layout import LATEST, safe_segment

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


class ExportHandle:
    """An export directory opened by the resolver, with its validated subdirectories.

    Descriptors are owned by the resolver's small cache, so a handle is valid only until the request's
    next ``await`` (every file of a response is opened synchronously, right after resolving, and then
    read through its own descriptor — which keeps its inode even if the export is pruned).
    """

    __slots__ = ("_memo", "_stats", "_subdirs", "dir_fd", "export_id", "ino", "path", "ttl")

    def __init__(self, export_id: str, dir_fd: int, ino: int, ttl: float = 0.0, path: str = "") -> None:
        self.export_id = export_id
        self.path = path
        """The export directory's path (exports are immutable once published: servers that send whole files
        themselves open them by name under it)."""
        self.dir_fd = dir_fd
        self.ino = ino
        self.ttl = ttl
        self._subdirs: dict[tuple[str, ...], int] = {(): dir_fd}
        self._stats: dict[tuple[tuple[str, ...], str], tuple[float, os.stat_result | None]] = {}
        self._memo: dict[Hashable, tuple[float, object]] = {}

    def recall(self, key: Hashable) -> object | None:
        """A value :meth:`remember`-ed under ``key`` less than the TTL ago (None otherwise)."""
        hit = self._memo.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def remember(self, key: Hashable, value: object) -> None:
        """Keep what was derived from this export's files (e.g. the representation chosen for a request and
        its response headers) for the TTL, like the ``lstat`` results it was derived from."""
        if self.ttl <= 0:
            return
        if len(self._memo) >= 1024:
            self._memo.clear()
        self._memo[key] = (time.monotonic(), value)

    def lstat_regular(self, dir_parts: tuple[str, ...], name: str) -> os.stat_result | None:
        """``lstat`` of a regular file in a subdirectory (None when missing or not a regular file), reused
        for the resolver's TTL — exports are immutable once published, and a file's version is still
        what selects the cached bytes."""
        key = (dir_parts, name)
        now = time.monotonic() if self.ttl > 0 else 0.0
        hit = self._stats.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=self.subdir(dir_parts), follow_symlinks=False)
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            st = None
        if self.ttl > 0:
            if len(self._stats) >= 1024:
                self._stats.clear()
            self._stats[key] = (now, st)
        return st

    def subdir(self, parts: tuple[str, ...]) -> int:
        """The descriptor of a subdirectory (validated segments, no symlinks), opened once per export."""
        fd = self._subdirs.get(parts)
        if fd is None:
            fd = open_dir(self.dir_fd, parts)
            if len(self._subdirs) >= _MAX_SUBDIRS:
                self._close_subdirs()
            self._subdirs[parts] = fd
        return fd

    def _close_subdirs(self) -> None:
        for key, fd in list(self._subdirs.items()):
            if key:
                os.close(fd)
                del self._subdirs[key]

    def close(self) -> None:
        self._close_subdirs()
        os.close(self.dir_fd)


_MAX_SUBDIRS = 256
_MAX_HANDLES = 8


class ExportResolver:
    """Resolves ``activeExportId`` (``latest`` or a fixed id) or a pinned id under one export root.

    Resolving is one ``readlink`` of ``latest`` and one ``lstat`` of the export directory it names (so an
    export directory replaced under the same id is noticed); the directory descriptors themselves are
    cached for the few most recent exports. On the overlay file systems containers use, those two path
    lookups were a tenth of the CPU of a small response, so a resolution is reused for ``ttl`` seconds
    (default 0.1 s): a publish becomes visible within that time, and every request still reads all its
    bytes from the one export it resolved.
    """

    def __init__(self, root: Path, active_export_id: str = LATEST, ttl: float = 0.1) -> None:
        self.root = root
        self.active_export_id = active_export_id
        self.ttl = ttl
        self._latest = os.fspath(root / LATEST)
        self._root = os.fspath(root)
        self._handles: OrderedDict[str, ExportHandle] = OrderedDict()
        self._checked: dict[str | None, tuple[float, ExportHandle]] = {}
        """pin (None: the active export) → (when it was last resolved, its handle)."""

    def active_id(self) -> str:
        """The id the active pointer names now (raises :class:`RootUnavailable`)."""
        if self.active_export_id != LATEST:
            return self.active_export_id
        try:
            target = os.readlink(self._latest)
        except FileNotFoundError:
            if not os.path.isdir(self._root):
                raise RootUnavailable("export root missing or unreadable") from None
            raise RootUnavailable("nothing is published yet (no 'latest' in the export root)") from None
        except OSError as exc:
            raise RootUnavailable(f"cannot read 'latest' in the export root: {exc.strerror}") from None
        name = target.rstrip("/").rsplit("/", 1)[-1]
        if not safe_segment(name) or name == LATEST:
            raise RootUnavailable("'latest' does not name an export directory")
        return name

    def resolve(self, pin: str | None = None) -> ExportHandle:
        """The active (or pinned) export. Raises :class:`ExportNotFound` for an unknown pin and
        :class:`RootUnavailable` when the active export cannot be opened."""
        if self.ttl > 0:
            now = time.monotonic()
            hit = self._checked.get(pin)
            if hit is not None and now - hit[0] < self.ttl and self._handles.get(hit[1].export_id) is hit[1]:
                return hit[1]
            handle = self._resolve(pin)
            if len(self._checked) >= 64:
                self._checked.clear()
            self._checked[pin] = (now, handle)
            return handle
        return self._resolve(pin)

    def _resolve(self, pin: str | None) -> ExportHandle:
        if pin is not None:
            if not safe_segment(pin) or pin == LATEST:
                raise ExportNotFound(f"{pin!r} is not an export id")
            export_id = pin
        else:
            export_id = self.active_id()
        path = self._root + "/" + export_id
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            if pin is not None:
                raise ExportNotFound(f"export {pin} is not (or no longer) kept on this mirror")
            raise RootUnavailable(f"the active export {export_id} is missing")
        handle = self._handles.get(export_id)
        if handle is not None and handle.ino == st.st_ino:
            self._handles.move_to_end(export_id)
            return handle
        try:
            dir_fd = os.open(path, _DIR_FLAGS)
        except OSError:
            if pin is not None:
                raise ExportNotFound(f"export {pin} is not (or no longer) kept on this mirror") from None
            raise RootUnavailable(f"the active export {export_id} is missing") from None
        if handle is not None:
            del self._handles[export_id]
            handle.close()
        handle = ExportHandle(export_id, dir_fd, os.fstat(dir_fd).st_ino, self.ttl, path)
        self._handles[export_id] = handle
        while len(self._handles) > _MAX_HANDLES:
            _, old = self._handles.popitem(last=False)
            old.close()
        return handle

    def forget(self, handle: ExportHandle) -> None:
        """Drop a handle whose directories turned out stale (the next request resolves afresh)."""
        self._checked.clear()
        if self._handles.get(handle.export_id) is handle:
            del self._handles[handle.export_id]
            handle.close()

    @contextlib.contextmanager
    def open(self, pin: str | None = None) -> Iterator[ExportHandle]:
        """:meth:`resolve` as a context manager (for code that awaits nothing while it reads)."""
        yield self.resolve(pin)

    def close(self) -> None:
        while self._handles:
            _, handle = self._handles.popitem()
            handle.close()


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
    if not parts:
        raise ValueError("open_dir needs at least one segment")
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
