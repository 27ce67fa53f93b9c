"""What a sync tells the operator: JSON log lines (one object per event on stderr), or on a terminal a
rich progress bar for the bytes being fetched plus one readable line per event."""

from __future__ import annotations

import sys
from typing import Any, Protocol

import orjson

from stella_mirror.timeutil import rfc3339, utcnow


class Reporter(Protocol):
    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """One thing that happened (``job``, ``exportId``… as fields; never a secret)."""

    def start_transfer(self, job: str, total_bytes: int) -> None:
        """Bytes are about to be fetched (at most ``total_bytes``)."""

    def advance(self, job: str, nbytes: int) -> None: ...

    def end_transfer(self, job: str) -> None: ...


class JsonReporter:
    """One JSON object per line on stderr: ``{"time", "level", "event", …}``."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        line = {"time": rfc3339(utcnow()), "level": level, "event": event, **fields}
        self.stream.write(orjson.dumps(line, default=str).decode() + "\n")
        self.stream.flush()

    def start_transfer(self, job: str, total_bytes: int) -> None:
        pass

    def advance(self, job: str, nbytes: int) -> None:
        pass

    def end_transfer(self, job: str) -> None:
        pass


class RichReporter:
    """A progress bar while fetching, and a short line per event, for a person at a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}
        """A progress bar per job fetching (jobs run side by side)."""

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        from rich.markup import escape

        style = {"error": "bold red", "warning": "yellow"}.get(level, "green" if event == "published" else "dim")
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        self.console.print(f"[{style}]{escape(event)}[/] {escape(detail)}")

    def start_transfer(self, job: str, total_bytes: int) -> None:
        self.progress.start()
        self.tasks[job] = self.progress.add_task(f"{job}: fetching", total=total_bytes)

    def advance(self, job: str, nbytes: int) -> None:
        task = self.tasks.get(job)
        if task is not None:
            self.progress.advance(task, nbytes)

    def end_transfer(self, job: str) -> None:
        task = self.tasks.pop(job, None)
        if task is not None:
            self.progress.remove_task(task)
        if not self.tasks:
            self.progress.stop()


def make_reporter(mode: str) -> Reporter:
    """``auto`` (rich on a terminal, JSON otherwise), ``json`` or ``rich``."""
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return JsonReporter()
