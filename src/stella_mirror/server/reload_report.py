"""The answer to a reload: SIGHUP carries none, so the server writes one for ``stella-mirror reload`` to read.

After every reload the server replaces ``<pid file>.reload`` (temp file + rename, so a reader sees a whole
answer and a new inode) with ``{"pid", "ok", "reason", "at"}``: ``reason`` is the one-line refusal naming the
key path or file, never a secret. ``stella-mirror reload`` notes the file's identity, signals, and waits for
a new one. With several workers the supervisor checks the new configuration the way a worker reloads it and
answers for all of them.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import orjson


def report_path(pid_file: Path) -> Path:
    """Where the server answers reloads: beside its pid file."""
    return pid_file.with_name(pid_file.name + ".reload")


def write_report(pid_file: Path, ok: bool, reason: str | None) -> None:
    """Replace the reload answer atomically (best effort: a read-only directory only loses the answer)."""
    path = report_path(pid_file)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = orjson.dumps({"pid": os.getpid(), "ok": ok, "reason": reason, "at": time.time()})
    with contextlib.suppress(OSError):
        tmp.write_bytes(body)
        os.replace(tmp, path)


def report_identity(pid_file: Path) -> tuple[int, int] | None:
    """``(inode, mtime_ns)`` of the current answer, None when there is none; a new answer changes it."""
    try:
        st = report_path(pid_file).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def read_report(pid_file: Path) -> dict[str, Any] | None:
    """The current answer, None when absent or unreadable."""
    try:
        doc = orjson.loads(report_path(pid_file).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
