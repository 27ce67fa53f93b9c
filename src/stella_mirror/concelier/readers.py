"""The reader processes of one Concelier export: they stage documents (pass 1), read alias buckets
(pass 2) and fold merge groups (pass 3), so both cores work while the exporter only orchestrates.

With ``workers <= 1`` every task runs in the exporting process instead. Each reader has its own pipe
and the exporter's one thread sends tasks and receives results itself: ``multiprocessing.Pool``'s
worker-handler thread wakes up whenever its result pipe is readable and, until the result thread has
read it, spins — about a second of CPU per 300k documents, taken from the readers.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import traceback
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from stella_mirror.concelier.fold import DomainRun, Group, fold_window
from stella_mirror.concelier.staging import Chunk, ChunkResult, Layout, StageConfig, StagedEntries, Stager, alias_pairs

SLOT_BYTES = 12 << 20
"""A shared-memory slot: a folded window's runs fit with room to spare (about 4.9 MiB of bundle per domain at 1,024
generated OSV documents, each with its source document since issue 17; 2.6 MiB before). Only the pages a window
writes are ever touched."""

Folded = tuple[list[DomainRun | None], list[int] | None, str | None]
"""A folded window as a reader returns it: its runs; when their bytes were taken out of them (a reader
process), the sizes of each run's data and lines, in order, and the spill file that holds them (None:
the window's shared slot)."""


class _Tasks:
    """What a reader runs: one stager for all its chunks, one view of the staged entries for all its folds."""

    def __init__(self, cfg: StageConfig, tag: str, shared: mmap.mmap | None = None, remote: bool = False) -> None:
        self.cfg = cfg
        self.tag = tag
        self.shared = shared
        self.remote = remote
        """A reader process: folded bytes are handed back through ``shared`` or a spill file, not the pipe."""
        self._stager: Stager | None = None
        self._entries: StagedEntries | None = None
        self._spills = 0

    def read(self, chunk: Chunk) -> ChunkResult:
        if self._stager is None:
            self._stager = Stager(self.cfg, self.tag)
        return self._stager.read_chunk(chunk)

    def fold(self, layout: Layout, keys: list[str], groups: list[Group], slot: int) -> Folded:
        if self._entries is None or self._entries.layout != layout:
            if self._entries is not None:
                self._entries.close()
            self._entries = StagedEntries(layout)
        runs = fold_window(self.cfg, self._entries, keys, groups)
        if not self.remote:
            return runs, None, None  # folded in the exporting process itself: nothing to carry
        blobs = [blob for run in runs if run is not None for blob in (run.data, run.lines)]
        for run in runs:
            if run is not None:
                run.data = run.lines = b""
        if self.shared is not None and slot >= 0 and sum(map(len, blobs)) <= SLOT_BYTES:
            at = slot * SLOT_BYTES
            for blob in blobs:
                self.shared[at : at + len(blob)] = blob
                at += len(blob)
            return runs, [len(blob) for blob in blobs], None
        # No slot, or too big for one: a file of its own, which the exporter reads and deletes.
        self._spills += 1
        path = f"{self.cfg.work}/fold-{self.tag}-{self._spills}.bin"
        with open(path, "xb") as fh:
            for blob in blobs:
                fh.write(blob)
        return runs, [len(blob) for blob in blobs], path

    def run(self, kind: str, args: tuple[Any, ...]) -> Any:
        """Run one task: ``read`` (a chunk), ``pairs`` (an alias bucket) or ``fold`` (a window)."""
        if kind == "read":
            return self.read(*args)
        if kind == "fold":
            return self.fold(*args)
        return alias_pairs(*args)

    def close(self) -> None:
        if self._stager is not None:
            self._stager.close()
            self._stager = None
        if self._entries is not None:
            self._entries.close()
            self._entries = None


def _reader_main(conn: Connection, cfg: StageConfig, shared: mmap.mmap | None) -> None:
    """A reader process: run tasks from the pipe, send each result (or the exception) back, in order."""
    # Readers build short-lived, acyclic containers by the million; the cyclic collector would only walk
    # them. Objects inherited from the parent are frozen out of its view as well.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    tasks = _Tasks(cfg, str(os.getpid()), shared, remote=True)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        task_id, kind, args = message
        try:
            reply: tuple[int, bool, Any] = (task_id, True, tasks.run(kind, args))
        except BaseException as exc:  # every failure goes back to the exporter, which raises it
            reply = (task_id, False, exc)
        try:
            conn.send(reply)
        except Exception:  # the exception itself may not pickle: send its text
            conn.send((task_id, False, RuntimeError("".join(traceback.format_exception(reply[2])))))


@dataclass
class _Reader:
    process: Any
    conn: Connection
    pending: deque[int] = field(default_factory=deque)
    """Ids of the tasks sent and not yet answered, in order (a reader answers in order)."""


class ReaderPool:
    """The reader processes (or, with ``workers <= 1``, this process) and the tasks in flight.

    Folded windows come back through ``slots`` slots of anonymous shared memory that the readers inherit
    (``fork`` only), one per window in flight; a window without a slot, or too large for one, through a
    spill file. Replies on the pipes stay small, so neither side can block the other on a full pipe.
    Measured in plain Python, taking a window's bytes out of a slot costs the exporter one copy;
    receiving it through the pipe cost more and kept the reader waiting until it was read (100k
    documents, paired runs: merge + write 0.77–0.85 s with slots, 0.85–1.06 s through the pipe).
    """

    _IN_FLIGHT = 2  # tasks queued per reader, so it never waits for the next one

    def __init__(self, cfg: StageConfig, workers: int, slots: int = 4) -> None:
        self.cfg = cfg
        self._readers: list[_Reader] = []
        self._done: dict[int, tuple[bool, Any]] = {}
        self._next_id = 0
        self._local = _Tasks(cfg, "main")
        self._shared: mmap.mmap | None = None
        self._free_slots: list[int] = []
        if workers > 1:
            fork = "fork" in multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if fork else None)
            if fork:
                self._shared = mmap.mmap(-1, slots * SLOT_BYTES)
                self._free_slots = list(range(slots))
            try:
                for _ in range(workers):
                    mine, theirs = ctx.Pipe()
                    process = ctx.Process(target=_reader_main, args=(theirs, cfg, self._shared), daemon=True)
                    process.start()
                    theirs.close()
                    self._readers.append(_Reader(process, mine))
            except BaseException:
                self.close()
                raise

    def _send(self, reader: _Reader, kind: str, args: tuple[Any, ...]) -> int:
        """Give a task to a reader; its id."""
        task_id = self._next_id
        self._next_id += 1
        try:
            reader.conn.send((task_id, kind, args))
        except OSError:  # its end of the pipe is closed: the process is gone
            reader.process.join(1)
            code = reader.process.exitcode
            raise RuntimeError(f"a reader process exited unexpectedly (exit code {code})") from None
        reader.pending.append(task_id)
        return task_id

    def _receive(self) -> None:
        """Wait until at least one reader has answered; file every answer that arrived under its task id."""
        busy = {r.conn: r for r in self._readers if r.pending}
        if not busy:
            raise RuntimeError("no reader task is pending")
        for conn in mp_connection.wait(list(busy)):
            reader = busy[cast(Connection, conn)]
            try:
                task_id, ok, value = reader.conn.recv()
            except EOFError:
                reader.process.join(1)
                raise RuntimeError(
                    f"a reader process exited unexpectedly (exit code {reader.process.exitcode})"
                ) from None
            if task_id != reader.pending[0]:
                raise RuntimeError(f"reader answered task {task_id}, expected {reader.pending[0]}")
            reader.pending.popleft()
            self._done[task_id] = (ok, value)

    def _result(self, task_id: int) -> Any:
        while task_id not in self._done:
            self._receive()
        ok, value = self._done.pop(task_id)
        if not ok:
            raise value
        return value

    def _run_here(self, kind: str, tasks: Iterator[tuple[Any, ...]]) -> Iterator[Any]:
        for args in tasks:
            yield self._local.run(kind, args)

    def _any_order(self, kind: str, tasks: Iterator[tuple[Any, ...]]) -> Iterator[Any]:
        """Run tasks of one kind on the readers, a few queued per reader; results as they come."""
        if not self._readers:
            yield from self._run_here(kind, tasks)
            return
        exhausted = False
        while True:
            for reader in self._readers:
                while not exhausted and len(reader.pending) < self._IN_FLIGHT:
                    args = next(tasks, None)
                    if args is None:
                        exhausted = True
                    else:
                        self._send(reader, kind, args)
            if not self._done and not any(r.pending for r in self._readers):
                return
            if not self._done:
                self._receive()
            for task_id in sorted(self._done):
                yield self._result(task_id)

    def _in_order(self, kind: str, tasks: Iterator[tuple[Any, ...]], ahead: int) -> Iterator[Any]:
        """Run tasks of one kind on the readers, ``ahead`` more in flight than the one awaited; results in
        task order."""
        if not self._readers:
            yield from self._run_here(kind, tasks)
            return
        in_flight: deque[int] = deque()
        for args in tasks:
            in_flight.append(self._send(min(self._readers, key=lambda r: len(r.pending)), kind, args))
            if len(in_flight) > ahead:
                yield self._result(in_flight.popleft())
        while in_flight:
            yield self._result(in_flight.popleft())

    def read(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        """Stage every chunk; results in any order."""
        return self._any_order("read", ((chunk,) for chunk in chunks))

    def alias_pairs(self, buckets: list[list[tuple[int, str]]]) -> Iterator[array]:  # type: ignore[type-arg]
        """:func:`.staging.alias_pairs` of every bucket; results in any order."""
        return self._any_order("pairs", ((files,) for files in buckets))

    def fold(
        self, layout: Layout, windows: Iterator[tuple[list[str], list[Group]]], ahead: int
    ) -> Iterator[list[DomainRun | None]]:
        """:func:`.fold.fold_window` of every window, in order, ``ahead`` windows folded ahead of the one taken."""
        slots: deque[int] = deque()  # the slot of each window in flight, in order (-1: none)

        def tasks() -> Iterator[tuple[Any, ...]]:
            for keys, groups in windows:
                slots.append(self._free_slots.pop() if self._free_slots else -1)
                yield layout, keys, groups, slots[-1]

        folded: Folded
        for folded in self._in_order("fold", tasks(), ahead):
            runs, sizes, spilled = folded
            slot = slots.popleft()
            if sizes is not None:
                source: bytes | mmap.mmap
                if spilled is None:
                    assert self._shared is not None
                    source, at = self._shared, slot * SLOT_BYTES
                else:
                    source, at = Path(spilled).read_bytes(), 0
                    os.unlink(spilled)
                parts = iter(sizes)
                for run in runs:
                    if run is not None:
                        n, m = next(parts), next(parts)
                        run.data, run.lines = source[at : at + n], source[at + n : at + n + m]
                        at += n + m
            if slot >= 0:
                self._free_slots.append(slot)  # copied out (or unused): the next window may take it
            yield runs

    def close(self) -> None:
        """Stop the processes and close what this process opened."""
        for reader in self._readers:
            reader.process.terminate()
        for reader in self._readers:
            reader.process.join()
            reader.conn.close()
        self._readers = []
        self._local.close()
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
